#include "qkv/train/cli/cli.h"

#include <qkv/core/errors.h>
#include <qkv/core/gemm.h>
#include <qkv/train/cli/commands.h>
#include <qkv/train/dist/comm.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/run/trainer.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <new>

namespace qkv {
namespace fs = std::filesystem;
namespace {

// How long a failing rank waits for the others to fail too before it ends the job alone: ranks that fail at the
// same point (a config error every rank reads) arrive within milliseconds of each other.
constexpr double kFailureAgreementSeconds = 5.0;

struct Command {
  const char* name;
  const char* help;
  cli::Runner (*declare)(CLI::App&);
};

// Every command, in the order `qkv --help` lists them: a new command is one line here and its declare_ function.
constexpr Command kCommands[] = {
    {"train", "train a model from a TOML config", cli::declare_train},
    {"eval", "validation metrics of a trained model", cli::declare_eval},
    {"info", "resolved config, model summary, parameter count and FLOPs per token", cli::declare_info},
    {"bench", "time training steps (no eval or checkpoint I/O)", cli::declare_bench},
    {"init", "write the initial weights a run of CONFIG starts from (for another framework)", cli::declare_init},
    {"export", "write a run's weights as a safetensors file (PyTorch/numpy read it) or a Hugging Face folder (gpt2 and llama kinds)",
     cli::declare_export},
    {"predict", "the predicted token at every position", cli::declare_predict},
    {"attention", "the attention matrix of one layer and head", cli::declare_attention},
    {"sample", "generate from a causal model", cli::declare_sample},
    {"report", "write one self-contained HTML page with a run's curves and attention", cli::declare_report},
    {"tokenize", "encode text files into token shards for data.task = \"tokens\"", cli::declare_tokenize},
    {"tokenizer", "train a BPE tokenizer, or encode and decode with one", cli::declare_tokenizer},
};

// The man-page part of `qkv --help` (a test checks it against README and the exit codes the CLI returns).
constexpr const char* kHelpFooter = R"(Each command has its own --help: qkv COMMAND --help.

Exit status:
  0    success
  1    runtime failure (a non-finite loss, out of memory, a failed write)
  2    usage, config or input error (the message names the key, file, line and column)
  130  stopped by SIGINT (Ctrl-C) after writing a checkpoint; 143 for SIGTERM

Files:
  RUN_DIR/config.toml, metrics.jsonl, train.log, checkpoints/, model.safetensors, report.html
  written by qkv train into run.out_dir/run.name; every file is written atomically

Environment:
  QKV_GEMM=eigen|blas|auto   the GEMM engine (default auto: the faster one here, measured once and cached)

More: README.md (quickstart, config reference: qkv info --keys))";

// The line a failure prints: what kind of failure, then the library's message.
std::string failure_message(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const PeerFailed&) {
    return "";  // another rank failed, and says why
  } catch (const WriteError& e) {
    return fmt::format("qkv: failed: {}\n", e.what());
  } catch (const Error& e) {
    return fmt::format("qkv: error: {}\n", e.what());
  } catch (const fs::filesystem_error& e) {  // an input path the system refuses (a symlink loop, a name too long)
    return fmt::format("qkv: error: {}{}: {}\n", e.path1().string(),
                       e.path2().empty() ? "" : " -> " + e.path2().string(), e.code().message());
  } catch (const TrainingError& e) {
    return fmt::format("\nqkv: training failed: {}\n", e.what());
  } catch (const OutOfMemoryError& e) {
    return fmt::format("\nqkv: {} (lower train.batch_size, data.seq_len or the model size)\n", e.what());
  } catch (const std::bad_alloc&) {
    return "\nqkv: out of memory (lower train.batch_size, data.seq_len or the model size)\n";
  } catch (const std::exception& e) {
    return fmt::format("qkv: failed: {}\n", e.what());
  } catch (...) {
    return "qkv: failed\n";
  }
}

// Runs a command; a failure is printed once per job (report_failure_once) and gives its exit status
// (failure_code: 2 for usage, config and input errors, 1 for failures while running).
int exit_code_of(const std::function<int()>& run) {
  try {
    return run();
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    const int code = failure_code(error);
    report_failure_once(Comm::world(), failure_message(error), code, kFailureAgreementSeconds);
    return code;
  }
}

// What a command printed is its output (ids, text, JSON): lost to a full disk or a failed device, the command
// failed, whatever it returned. stdio reports a failed write only at the flush, so every command is checked here.
int checked_stdout(int code) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return code;
  const int err = errno;
  fmt::print(stderr, "qkv: failed: writing to standard output: {}\n", err != 0 ? std::strerror(err) : "an I/O error");
  return code == 0 ? 1 : code;
}

}  // namespace

std::vector<std::string> command_names() {
  std::vector<std::string> names;
  for (const Command& c : kCommands) names.push_back(c.name);
  return names;
}

int run_cli(int argc, const char* const* argv) {
  CLI::App app{"qkv: train, inspect and export attention models"};
  app.set_version_flag("--version", std::string("qkv ") + version());
  app.require_subcommand(1);
  app.footer(kHelpFooter);
  std::vector<std::pair<CLI::App*, cli::Runner>> commands;
  for (const Command& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    commands.emplace_back(sub, c.declare(*sub));
  }
  if (launched_by_mpirun()) {
    // Under mpirun MPI starts before anything can fail, so a failure on any rank can be agreed on or end the job.
    const int code = exit_code_of([] { return (void)Comm::world(), 0; });
    if (code != 0) return code;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return exit_code_of([&]() -> int {
      fail("{}\n(run 'qkv --help' or 'qkv <command> --help')", e.what());
    });
  }
  const int code = exit_code_of([&] {
    gemm_choice();  // a bad QKV_GEMM is a usage error before any work
    for (const auto& [sub, run] : commands)
      if (sub->parsed()) return run();
    return 2;
  });
  return checked_stdout(code);
}

}  // namespace qkv
