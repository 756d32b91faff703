#include "../../support.h"

#include <qkv/train/run/config.h>

#include <fstream>
#include <sstream>

using namespace qkv;

namespace {
Config parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return parse_config(text, "test.toml", overrides);
}
}  // namespace

TEST_CASE("the shipped configs parse and validate") {
  for (const char* name : {"reverse", "sort", "recall", "text"}) {
    const Config c = load_config(std::string(QKV_SOURCE_DIR) + "/configs/" + name + ".toml");
    CHECK(c.run.name == name);
  }
  const Config r = load_config(std::string(QKV_SOURCE_DIR) + "/configs/reverse.toml");
  CHECK(r.data.task == "reverse");
  CHECK(r.model.kind == "seed");
  CHECK(r.train.target_accuracy == doctest::Approx(0.995));
  CHECK(r.optim.betas == std::vector<double>{0.9, 0.999});  // a default
}

TEST_CASE("values of every type, integers accepted for floats, overrides through the same path") {
  const Config c = parse("[optim]\nlr = 1\nbetas = [0.8, 0.95]\n[model]\ncausal = true\n",
                         {"train.steps=42", "optim.name=sgd", "data.task=\"copy\"", "optim.betas=[0.5, 0.6]",
                          "model.dropout=0.25"});
  CHECK(c.optim.lr == 1.0);
  CHECK(c.optim.betas == std::vector<double>{0.5, 0.6});
  CHECK(c.model.causal);
  CHECK(c.train.steps == 42);
  CHECK(c.optim.name == "sgd");
  CHECK(c.data.task == "copy");
  CHECK(c.model.dropout == 0.25);
}

TEST_CASE("the resolved config round-trips") {
  const Config c = parse("[run]\nname = \"a \\\"b\\\"\"\n[optim]\nlr = 0.0005\n", {"train.steps=7"});
  const std::string toml = to_toml(c);
  CHECK(toml.find("[train]\nsteps = 7") != std::string::npos);
  CHECK(to_toml(parse(toml)) == toml);
}

TEST_CASE("config errors: file, line, column, key, and a suggestion") {
  CHECK_ERROR(parse("[data]\nseq_len = = 3\n"), "test.toml:2:");
  CHECK_ERROR(parse("[data]\nseq_len = = 3\n"), "invalid TOML");
  CHECK_ERROR(parse("[data]\nseq_length = 3\n"), "test.toml:2:14: unknown key 'data.seq_length' (did you mean 'data.seq_len'?)");
  CHECK_ERROR(parse("[trian]\nsteps = 3\n"), "unknown section [trian] (did you mean 'train'?)");
  CHECK_ERROR(parse("[train]\nsteps = \"many\"\n"), "test.toml:2:9: train.steps: expected an integer, got a string");
  CHECK_ERROR(parse("[train]\nsteps = 1.5\n"), "train.steps: expected an integer, got a float");
  CHECK_ERROR(parse("[model]\ncausal = 1\n"), "model.causal: expected a boolean (true or false), got an integer");
  CHECK_ERROR(parse("[optim]\nbetas = [0.9]\n"), "optim.betas: expected an array of two numbers");
  CHECK_ERROR(parse("[train]\nbatch_size = 0\n"), "test.toml:2:14: train.batch_size: value 0 is out of range (expected 1 to");
  CHECK_ERROR(parse("[optim]\nlr = -0.1\n"), "optim.lr: value -0.1 is out of range");
  CHECK_ERROR(parse("[optim]\nbetas = [0.9, 1.0]\n"), "optim.betas: each beta must be in [0, 1), got [0.9, 1.0]");
  CHECK_ERROR(parse("[data]\ntask = \"translate\"\n"), "data.task: unknown value \"translate\" (expected one of: copy, reverse, sort, recall, text, jsonl, tokens)");
  CHECK_ERROR(parse("[run]\nseed = -1\n"), "run.seed: expected a non-negative integer, got -1");
  CHECK_ERROR(parse("data = 3\n"), "[data] must be a table of keys");
}

TEST_CASE("inconsistent values name both keys") {
  CHECK_ERROR(parse("[data]\ntask = \"text\"\npath = \"x\"\n"), "data.task = \"text\" needs model.causal = true");
  CHECK_ERROR(parse("[data]\ntask = \"jsonl\"\n"), "data.path is required for data.task = \"jsonl\"");
  CHECK_ERROR(parse("[data]\nseq_len = 20\n[model]\npositions = 16\n"),
              "test.toml:2:11: data.seq_len = 20 is larger than the model's positional table (model.positions = 16)");
  CHECK_ERROR(parse("[model]\nkind = \"transformer\"\nd_model = 30\nheads = 4\n"),
              "test.toml:4:9: model: d_model = 30 is not divisible by heads = 4");
  CHECK_ERROR(parse("[optim]\nnesterov = true\n"), "optim.nesterov needs optim.name = \"sgd\"");
  CHECK_ERROR(parse("[schedule]\nkind = \"cosine\"\nwarmup_steps = 2000\n"),
              "test.toml:3:16: schedule: cosine needs total_steps (1000) larger than warmup_steps (2000)");
  // Each rule at its boundary: equal is refused where the rule says smaller, accepted where it says at most.
  CHECK_ERROR(parse("[schedule]\nkind = \"linear\"\nwarmup_steps = 1000\n"), "schedule: linear needs total_steps (1000) larger than warmup_steps (1000)");
  CHECK(parse("[schedule]\nkind = \"cosine\"\nwarmup_steps = 999\n").schedule.warmup_steps == 999);
  CHECK(parse("[data]\nseq_len = 16\n[model]\npositions = 16\n").data.seq_len == 16);
  CHECK_ERROR(parse("[data]\nseq_len = 17\n[model]\npositions = 16\n"), "data.seq_len = 17 is larger");
  CHECK_ERROR(parse("[optim]\nname = \"sgd\"\nnesterov = true\nmomentum = 0.0\n"), "test.toml:3:12: SGD: nesterov requires momentum > 0");
  CHECK(parse("[optim]\nname = \"sgd\"\nnesterov = true\nmomentum = 0.5\n").optim.nesterov);
  CHECK_ERROR(parse("[train]\nkeep_checkpoints = 0\n"), "train.keep_checkpoints: value 0 is out of range (expected 1 to");
}

TEST_CASE("override errors say which override") {
  CHECK_ERROR(parse("", {"train.steps"}), "override 'train.steps': expected section.key=value");
  CHECK_ERROR(parse("", {"train.stepz=3"}), "override 'train.stepz=3': unknown key 'train.stepz' (did you mean 'train.steps'?)");
  CHECK_ERROR(parse("", {"train.steps=abc"}), "override 'train.steps=abc': train.steps: expected an integer, got a string");
  CHECK_ERROR(parse("", {"train.steps=0"}), "override 'train.steps=0': train.steps: value 0 is out of range");
}

TEST_CASE("docs/training.md's config reference is the generated table (qkv info --keys), every key in order") {
  std::ifstream in(std::string(QKV_SOURCE_DIR) + "/docs/training.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  for (const auto& k : config_reference()) {
    INFO(k.name);
    CHECK(readme.find("`" + k.name + "`") != std::string::npos);
  }
  CHECK_MESSAGE(readme.find(config_reference_markdown()) != std::string::npos,
                "regenerate docs/training.md's table with build/bin/qkv info --keys");
}

TEST_CASE("run.name is one plain directory name, located in errors (B1)") {
  CHECK_ERROR(parse("[run]\nname = \"..\"\n"), "test.toml:2:8: run.name: \"..\" is not a plain directory name");
  CHECK_ERROR(parse("[run]\nname = \"\"\n"), "run.name: \"\" is not a plain directory name");
  CHECK_ERROR(parse("", {"run.name=\"a/b\""}), "override 'run.name=\"a/b\"': run.name:");
  CHECK_ERROR(parse("", {"run.name=/etc"}), "run.name: \"/etc\" is not a plain directory name");
  CHECK(parse("", {"run.name=my-run_2"}).run.name == "my-run_2");
}

// A name with CR, ESC or DEL trained to the end, then wrote a config.toml that --resume could not read.
TEST_CASE("control characters in names and paths are refused at parse time, located") {
  CHECK_ERROR(parse("[run]\nname = \"a\\rb\"\n"), "test.toml:2:8: run.name: control character 0x0D at byte 1");
  for (const char* bad : {"a\x01", "\x1b[31mred", "del\x7f", "tab\there"})
    CHECK_ERROR(parse("", {std::string("run.name=") + bad}), "run.name: control character");
  CHECK_ERROR(parse("[data]\ntask = \"text\"\npath = \"in\\u0007put.txt\"\n[model]\ncausal = true\n"),
              "test.toml:3:8: data.path: control character 0x07 at byte 2");
  CHECK_ERROR(parse("", {"run.out_dir=runs\x1b"}), "run.out_dir: control character 0x1B at byte 4");
  // What is allowed is written so that it reads back: quotes, backslashes, any Unicode.
  const Config c = parse("", {"run.name=\"q\\\"uote é ✓\"", "data.path=\"C:\\\\x\""});
  CHECK(c.run.name == "q\"uote é ✓");
  CHECK(c.data.path == "C:\\x");
  CHECK(parse(to_toml(c)).data.path == c.data.path);
  CHECK(parse(to_toml(c)).run.name == c.run.name);
}

TEST_CASE("overrides: numbers too large say out of range; an open quote is an error, not a name") {
  CHECK_ERROR(parse("", {"train.steps=99999999999999999999"}),
              "override 'train.steps=99999999999999999999': train.steps: value 99999999999999999999 is out of range");
  CHECK_ERROR(parse("", {"optim.lr=-1e999999"}), "optim.lr: value -1e999999 is out of range");
  CHECK_ERROR(parse("", {"run.name=\"abc"}), "override 'run.name=\"abc': run.name: invalid TOML value \"abc");
  CHECK_ERROR(parse("", {"optim.betas=[0.9, 0.99"}), "optim.betas: invalid TOML value");
  CHECK(parse("", {"run.name=abc"}).run.name == "abc");  // a bare word is still a string
  // In a file, toml++ itself says the integer does not fit, with the location.
  CHECK_ERROR(parse("[train]\nsteps = 99999999999999999999\n"), "test.toml:2:");
}

TEST_CASE("a directory given as CONFIG is an error (B2)") {
  CHECK_ERROR(load_config(QKV_SOURCE_DIR "/configs"), "is a directory, not a config file");
}

TEST_CASE("the data keys round-trip through a model file's qkv.data metadata, checked like the config") {
  const Config c = parse("[run]\nseed = 7\n[data]\ntask = \"jsonl\"\nvocab_size = 99\nseq_len = 21\nval_size = 5\n"
                         "path = \"a.jsonl\"\nval_path = \"b.jsonl\"\nshuffle = false\n");
  const Config back = config_from_data_json(data_to_json(c), "f");
  CHECK(to_toml(back) == to_toml(c) );
  CHECK_ERROR(config_from_data_json(R"({"seq_len": 0})", "f"), "f: qkv.data: data.seq_len: value 0 is out of range");
  CHECK_ERROR(config_from_data_json(R"({"shuffle": 1})", "f"), "f: qkv.data: data.shuffle: expected a boolean");
  CHECK_ERROR(config_from_data_json(R"({"seed": 1e99})", "f"), "f: qkv.data: run.seed: expected an integer, got a float");
  CHECK_ERROR(config_from_data_json("[1]", "f"), "f: the qkv.data metadata is not a JSON object");
}

TEST_CASE("precision, grad_accum_steps and recompute: bad input names the key") {
  CHECK_ERROR(parse("[train]\nprecision = \"fp16\"\n"), "test.toml:2:13: train.precision");
  CHECK_ERROR(parse("[train]\nprecision = \"fp16\"\n"), "fp32, bf16");
  CHECK_ERROR(parse("[train]\nbatch_size = 6\ngrad_accum_steps = 4\n"),
              "test.toml:3:20: train.grad_accum_steps = 4 does not divide train.batch_size = 6");
  CHECK_ERROR(parse("[train]\ngrad_accum_steps = 0\n"), "train.grad_accum_steps: value 0 is out of range");
  CHECK_ERROR(parse("[model]\nkind = \"seed\"\nrecompute = true\n"),
              "test.toml:3:13: model.recompute = true: model.kind = \"seed\" has no blocks to recompute (the kinds that "
              "do: transformer, gpt2, llama)");
  const Config ok = parse("[model]\nkind = \"transformer\"\nrecompute = true\n[train]\nprecision = \"bf16\"\n"
                          "batch_size = 8\ngrad_accum_steps = 4\n");
  CHECK(ok.model.recompute);
  CHECK(ok.train.precision == "bf16");
  CHECK(ok.train.grad_accum_steps == 4);
}

TEST_CASE("--resume overrides: one that changes the model is refused naming the key; dropout and recompute may change") {
  const std::string reverse = std::string(QKV_SOURCE_DIR) + "/configs/reverse.toml";
  const Config was = load_config(reverse, {});
  CHECK_ERROR(check_resume_overrides(was, load_config(reverse, {"model.d_model=48"}), "run/config.toml"),
              "resume: model.d_model = 48 changes the run's model (run/config.toml has 64)");
  CHECK_ERROR(check_resume_overrides(was, load_config(reverse, {"model.heads=2"}), "c"), "model.heads = 2");
  CHECK_NOTHROW(check_resume_overrides(was, load_config(reverse, {"model.dropout=0.1", "train.steps=999"}), "c"));
}
