#pragma once
// Private to train/cli: the commands. Each declare_* function adds one command's options to its CLI11 subcommand
// and returns what runs it; the table in cli.cpp lists them. A new command is one declare_* function (options,
// then a call into the library) and one line in that table.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace qkv::cli {

/// Runs a parsed command; returns its exit code (errors are thrown, and run_cli maps them to codes).
using Runner = std::function<int()>;

// run_commands.cpp: the commands that read a config or a run.
Runner declare_train(CLI::App& command);
Runner declare_eval(CLI::App& command);
Runner declare_info(CLI::App& command);
Runner declare_bench(CLI::App& command);
Runner declare_init(CLI::App& command);
// model_commands.cpp: the commands that read a trained model.
Runner declare_export(CLI::App& command);
Runner declare_predict(CLI::App& command);
Runner declare_attention(CLI::App& command);
Runner declare_sample(CLI::App& command);
Runner declare_report(CLI::App& command);
// token_commands.cpp: tokenizers and token shards.
Runner declare_tokenize(CLI::App& command);
Runner declare_tokenizer(CLI::App& command);

/// An output file named on the command line, checked before any work: not a directory, in a folder that exists.
void check_output_path(const std::string& path, const char* option);

}  // namespace qkv::cli
