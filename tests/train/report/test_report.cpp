#include "../../support.h"

#include <qkv/train/report/report.h>
#include <qkv/train/run/trainer.h>

#include <filesystem>
#include <fstream>
#include <cctype>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
std::string out_dir() {
  const auto d = test::process_dir() / "report";
  fs::create_directories(d);
  return d.string();
}
Config shipped(const std::string& name, std::vector<std::string> overrides) {
  overrides.push_back("run.out_dir=\"" + out_dir() + "\"");
  overrides.push_back("schedule.warmup_steps=0");
  overrides.push_back("train.target_accuracy=0");
  return load_config(std::string(QKV_SOURCE_DIR) + "/configs/" + name + ".toml", overrides);
}
TrainOptions quiet() {
  TrainOptions o;
  o.force = true;
  o.quiet = true;
  return o;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return {(std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()};
}
std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}
std::string unescape(std::string s) {
  for (const auto& [from, to] : {std::pair{"&quot;", "\""}, {"&lt;", "<"}, {"&gt;", ">"}, {"&#39;", "'"}, {"&amp;", "&"}})
    for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at)) s.replace(at, std::string(from).size(), to);
  return s;
}
// The text of the first element starting with `open`, up to its closing tag `close`.
std::string element(const std::string& html, const std::string& open, const std::string& close) {
  const auto b = html.find(open);
  return b == std::string::npos ? "" : html.substr(b, html.find(close, b) - b);
}

// Well-formed HTML as qkv writes it: every element closed in order (void elements and "/>" aside), script and
// style bodies skipped, every attribute value quoted. Returns "" or what is wrong.
std::string check_html(const std::string& html) {
  if (html.rfind("<!DOCTYPE html>", 0) != 0) return "no doctype";
  const std::vector<std::string> void_elements = {"meta", "br", "hr", "img", "input", "link"};
  const auto word = [&](std::size_t& i) {
    const std::size_t b = i;
    while (i < html.size() && (std::isalnum(static_cast<unsigned char>(html[i])) || html[i] == '-' || html[i] == ':')) ++i;
    return html.substr(b, i - b);
  };
  std::vector<std::string> open;
  for (std::size_t i = html.find('<', 1); i != std::string::npos; i = html.find('<', i)) {
    const std::size_t at = i++;
    const bool closing = html[i] == '/';
    if (closing) ++i;
    const std::string name = word(i);
    if (name.empty()) return "malformed tag at " + std::to_string(at) + ": " + html.substr(at, 40);
    for (;;) {  // attributes
      while (std::isspace(static_cast<unsigned char>(html[i]))) ++i;
      if (html[i] == '>' || html.compare(i, 2, "/>") == 0) break;
      if (word(i).empty()) return "malformed attribute in <" + name + "> at " + std::to_string(i);
      if (html[i] != '=') continue;
      if (html[++i] != '"') return "unquoted attribute in <" + name + "> at " + std::to_string(i);
      i = html.find('"', i + 1) + 1;
    }
    const bool self_closing = html[i] == '/';
    i = html.find('>', i) + 1;
    if (closing) {
      if (open.empty() || open.back() != name) return "</" + name + "> closes <" + (open.empty() ? "" : open.back()) + ">";
      open.pop_back();
    } else if (!self_closing && std::find(void_elements.begin(), void_elements.end(), name) == void_elements.end()) {
      open.push_back(name);
      if (name == "script" || name == "style") i = html.find("</" + name + ">", i);
    }
  }
  return open.empty() ? "" : "unclosed <" + open.back() + ">";
}
}  // namespace

TEST_CASE("a run writes report.html: valid, one chart per metric with a point per event, the config, the model") {
  const auto r = train(shipped("reverse", {"run.name=\"a\"", "train.steps=60", "train.log_every=5", "train.eval_every=20"}), quiet());
  const std::string html = slurp(r.run_dir + "/report.html");  // written by the trainer itself
  CHECK(check_html(html) == "");
  CHECK(html.find("<html lang=\"en\">") != std::string::npos);
  CHECK(html.find("<title>qkv report: a</title>") != std::string::npos);
  CHECK(html.size() < 1'000'000);
  std::ifstream metrics(r.run_dir + "/metrics.jsonl");
  std::map<std::string, std::size_t> events;
  nlohmann::json last_train, last_val;
  for (std::string line; std::getline(metrics, line);) {
    const auto event = nlohmann::json::parse(line);
    for (const auto& [k, v] : event.items())
      if (v.is_number() && k != "step") ++events[k];
    (event["split"] == "val" ? last_val : last_train) = event;
  }
  // The final metrics table: the last training loss and the last evaluation, each from its own kind of line.
  const auto row = [&](const char* name, double v) {
    return fmt::format("<th scope=\"row\">{}</th><td>{:.4f}</td>", name, v);
  };
  CHECK(html.find("<th scope=\"row\">steps</th><td>60</td>") != std::string::npos);
  CHECK(html.find(row("last training loss", last_train["loss"].get<double>())) != std::string::npos);
  CHECK(html.find(row("validation loss", last_val["loss"].get<double>())) != std::string::npos);
  CHECK(html.find(row("token accuracy", last_val["token_acc"].get<double>())) != std::string::npos);
  CHECK(html.find(row("sequence accuracy", last_val["seq_acc"].get<double>())) != std::string::npos);
  CHECK(events["loss"] == 12 + 3);  // 12 training logs, 3 evaluations
  for (const char* metric : {"loss", "token_acc", "seq_acc", "lr", "grad_norm", "tokens_per_s"}) {
    const std::string chart = element(html, std::string("<figure class=\"chart\" data-metric=\"") + metric + "\"", "</figure>");
    REQUIRE_MESSAGE(!chart.empty(), metric);
    CHECK_MESSAGE(count(chart, "class=\"pt\"") == events[metric], metric);
    CHECK(chart.find("<title>") != std::string::npos);  // an accessible name
  }
  CHECK(html.find("qkv train " + r.run_dir + "/config.toml &#39;run.name=&quot;a-again&quot;&#39;") != std::string::npos);
  CHECK(html.find("attn.w_q.weight") != std::string::npos);  // the model summary
  CHECK(html.find("15120 parameters") != std::string::npos);
}

TEST_CASE("several runs overlay: one series per run in every chart, distinct colours") {
  const auto a = train(shipped("reverse", {"run.name=\"a\"", "train.steps=30", "train.log_every=5", "train.eval_every=10"}), quiet());
  const auto b = train(shipped("reverse", {"run.name=\"b\"", "train.steps=40", "optim.lr=0.01", "train.log_every=5",
                                           "train.eval_every=10"}), quiet());
  const std::string out = out_dir() + "/overlay.html";
  CHECK(test::run_cli_captured({"qkv", "report", a.run_dir, b.run_dir, "--out", out}, out_dir()).code == 0);
  const std::string html = slurp(out);
  CHECK(check_html(html) == "");
  for (const char* metric : {"seq_acc", "lr"}) {
    const std::string chart = element(html, std::string("data-metric=\"") + metric + "\"", "</figure>");
    CHECK(count(chart, "class=\"series\"") == 2);
    CHECK(count(chart, "data-run=\"a\"") == 1);
    CHECK(count(chart, "data-run=\"b\"") == 1);
    CHECK(count(chart, "stroke=\"#0072B2\"") == 1);
    CHECK(count(chart, "stroke=\"#D55E00\"") == 1);
  }
  CHECK(count(element(html, "data-metric=\"loss\"", "</figure>"), "class=\"series\"") == 4);  // train and val each
}

TEST_CASE("heatmap cells equal qkv attention --json for the same example") {
  const auto r = train(shipped("sort", {"run.name=\"maps\"", "train.steps=30"}), quiet());
  const std::string html = slurp(r.run_dir + "/report.html");
  CHECK(count(html, "<figure class=\"heatmap\">") == 2 * 4);  // every layer and head: 2 layers x 4 heads
  const std::string map = element(html, "<figure class=\"heatmap\">", "</figure>");
  const auto attribute = [&](const std::string& name) {
    const auto b = map.find(name + "=\"") + name.size() + 2;
    return unescape(map.substr(b, map.find('"', b) - b));
  };
  const auto weights = nlohmann::json::parse(attribute("data-weights")), tokens = nlohmann::json::parse(attribute("data-tokens"));
  std::string ids;
  for (const auto& t : tokens) ids += t.get<std::string>() + " ";
  const auto cli = test::run_cli_captured({"qkv", "attention", r.run_dir, "--tokens", ids, "--layer", "0", "--head", "0", "--json"},
                                          out_dir());
  REQUIRE(cli.code == 0);
  const auto j = nlohmann::json::parse(cli.out);
  REQUIRE(j["weights"].size() == weights.size());
  for (std::size_t i = 0; i < weights.size(); ++i)
    for (std::size_t k = 0; k < weights.size(); ++k)
      CHECK(std::abs(weights[i][k].get<double>() - j["weights"][i][k].get<double>()) <= 0.5e-4);  // 4 decimals
}

TEST_CASE("text models get a sample and the first 32 tokens; an unfinished run is shown from its checkpoint") {
  const auto r = train(shipped("text", {"run.name=\"text\"", "train.steps=10", "train.eval_every=10"}), quiet());
  const std::string html = slurp(r.run_dir + "/report.html");
  CHECK(check_html(html) == "");
  CHECK(html.find("<h3>Sample</h3>") != std::string::npos);
  CHECK(html.find("(its first 32 of 64 tokens)") != std::string::npos);
  CHECK(html.size() < 1'000'000);
  fs::remove(r.run_dir + "/model.safetensors");
  const std::string partial = render_report({r.run_dir});
  CHECK(partial.find("unfinished run: weights of " + r.run_dir + "/checkpoints/step_000000010.safetensors") != std::string::npos);
  CHECK_ERROR(render_report({out_dir()}), "is not a qkv run directory");
  // Lines of the wrong type (qkv report exited 1 on them) are skipped, and the page says so; control characters
  // in a run's name never reach the page raw.
  std::ofstream(r.run_dir + "/metrics.jsonl", std::ios::app) << R"({"step": "five", "split": "train", "loss": 1})" << "\n"
                                                            << R"({"step": 11, "split": 3, "loss": 1})" << "\n"
                                                            << R"({"step": 12, "split": "train", "loss": "x"})" << "\n";
  const std::string odd = render_report({r.run_dir});
  CHECK(odd.find("metrics.jsonl: skipped 3 lines that are not a qkv record (the first: line ") != std::string::npos);
  CHECK(check_html(odd) == "");
}

TEST_CASE("the HTML check above catches what it should") {
  CHECK(check_html("<!DOCTYPE html>\n<html><body><div></body></html>") == "</body> closes <div>");
  CHECK(check_html("<!DOCTYPE html>\n<html><p class=x></p></html>").find("unquoted attribute") == 0);
  CHECK(check_html("<!DOCTYPE html>\n<html><body>") == "unclosed <body>");
  CHECK(check_html("<html></html>") == "no doctype");
  CHECK(check_html("<!DOCTYPE html>\n<html><meta charset=\"utf-8\"><svg><path d=\"M0 0\"/></svg></html>") == "");
}

TEST_CASE("a long run's curves are thinned to a page that opens: at most 1000 points a curve, spikes kept") {
  const auto dir = fs::path(out_dir()) / "long";
  fs::create_directories(dir);
  {
    std::ofstream m(dir / "metrics.jsonl");
    for (int step = 1; step <= 100'000; ++step)
      m << fmt::format(R"({{"step": {}, "split": "train", "loss": {}, "lr": 0.001}})", step, step == 77'777 ? 50.0 : 2.0) << "\n";
  }
  const std::string html = slurp(write_report({dir.string()}, (dir / "report.html").string()));
  CHECK(check_html(html) == "");
  CHECK(html.size() < 2'000'000);
  const std::string loss = element(html, "<figure class=\"chart\" data-metric=\"loss\"", "</figure>");
  CHECK(count(loss, "class=\"pt\"") <= 1001);
  CHECK(count(loss, "class=\"pt\"") >= 500);
  CHECK(loss.find("step 77777: 50") != std::string::npos);  // the spike survives thinning
  CHECK(loss.find("step 100000: 2") != std::string::npos);  // and the last point
}
