#include "qkv/train/report/report.h"

#include <qkv/datasets/utf8.h>
#include <qkv/core/ops.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/use/attention_view.h>
#include <qkv/train/use/generate.h>
#include <qkv/train/use/trained.h>
#include <qkv/train/io/files.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>

namespace qkv {
namespace fs = std::filesystem;
namespace {

// Okabe-Ito: colours that stay distinct for colour-blind readers.
const char* const kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"};

// One home for escaping (train/files.h): XML, so control characters never make the page ill-formed.
constexpr auto esc = xml_escape;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {(std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()};
}

// ---- what one run left on disk ---------------------------------------------------------------------------------

struct RunData {
  std::string dir, label;
  std::vector<nlohmann::json> events;  // metrics.jsonl, one object per log or eval event
  std::int64_t skipped = 0, first_skipped = 0;  // metrics.jsonl lines that are not records, and the first one
  std::string config_toml;
  std::optional<TrainedModel> model;  // the final model, else the newest checkpoint's, else none yet
  std::string model_note;
};

RunData read_run(const std::string& dir) {
  const fs::path d(dir);
  QKV_CHECK(fs::is_regular_file(d / "config.toml") || fs::is_regular_file(d / "metrics.jsonl"),
            "report: {} is not a qkv run directory (it has neither config.toml nor metrics.jsonl)", dir);
  RunData r;
  r.dir = dir;
  r.label = d.filename().empty() ? d.parent_path().filename().string() : d.filename().string();
  std::ifstream in(d / "metrics.jsonl");
  std::int64_t no = 0;
  for (std::string line; std::getline(in, line);) {
    ++no;
    auto j = nlohmann::json::parse(line, nullptr, false);
    // A record: an object with a step, a string split (if any) and numbers for everything else. Anything
    // else (a hand edit, a line cut short) is skipped, and the page says so.
    bool ok = !j.is_discarded() && j.is_object() && j.contains("step");
    if (ok)
      for (const auto& [key, value] : j.items()) ok = ok && (key == "split" ? value.is_string() : value.is_number());
    if (ok) r.events.push_back(std::move(j));
    else if (r.skipped++ == 0) r.first_skipped = no;
  }
  r.config_toml = slurp(d / "config.toml");
  try {
    r.model = load_trained(dir);
    if (!fs::exists(d / "model.safetensors")) r.model_note = "unfinished run: weights of " + r.model->path;
  } catch (const Error& e) {
    r.model_note = std::string("no model yet (") + e.what() + ")";
  }
  return r;
}

// ---- line charts ----------------------------------------------------------------------------------------------

struct Series {
  std::string run, split, color;
  std::vector<std::pair<double, double>> points;  // (step, value)
};
struct Chart {
  std::string metric, title, y_label;
  bool log_y = false, unit_range = false;  // unit_range: accuracy, fixed to [0, 1]
  std::vector<Series> series;
};

// 1, 2 or 5 times a power of ten, about span / 5.
double nice_step(double span) {
  const double raw = span / 5, p = std::pow(10.0, std::floor(std::log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

std::string tick_label(double v) { return fmt::format("{:.3g}", v); }

struct Axis {
  double lo, hi;
  bool log;
  double at(double v, double px0, double px1) const {  // value -> pixel
    const double x = log ? std::log10(std::max(v, std::pow(10.0, lo))) : v;
    return px0 + (px1 - px0) * (x - lo) / (hi - lo);
  }
  std::vector<double> ticks() const {
    std::vector<double> t;
    if (log) {  // 1, 2, 5 per decade; only the powers of ten when that makes too many
      for (double e = std::floor(lo); e <= std::ceil(hi); ++e)
        for (double m : {1.0, 2.0, 5.0})
          if (const double v = m * std::pow(10.0, e); std::log10(v) >= lo - 1e-9 && std::log10(v) <= hi + 1e-9) t.push_back(v);
      if (t.size() > 8) std::erase_if(t, [](double v) { return std::abs(std::log10(v) - std::round(std::log10(v))) > 1e-9; });
      return t;
    }
    const double s = nice_step(hi - lo);
    for (double v = std::ceil(lo / s) * s; v <= hi + 1e-9 * s; v += s) t.push_back(v);
    return t;
  }
};

Axis y_axis(const Chart& c) {
  if (c.unit_range) return {0, 1, false};
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : c.series)
    for (const auto& [x, y] : s.points)
      if (std::isfinite(y) && (!c.log_y || y > 0)) lo = std::min(lo, y), hi = std::max(hi, y);
  if (!std::isfinite(lo)) lo = c.log_y ? 0.1 : 0, hi = 1;
  if (c.log_y) {
    lo = std::floor(std::log10(lo) * 4) / 4, hi = std::ceil(std::log10(hi) * 4) / 4;
    return {lo, hi > lo ? hi : lo + 1, true};
  }
  const double pad = hi > lo ? 0.05 * (hi - lo) : std::max(1e-3, std::abs(hi) * 0.1);
  return {lo >= 0 ? 0.0 : lo - pad, hi + pad, false};  // rates and throughputs start at 0
}

Axis x_axis(const std::vector<Chart>& charts) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& c : charts)
    for (const auto& s : c.series)
      for (const auto& [x, y] : s.points) lo = std::min(lo, x), hi = std::max(hi, x);
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  return {std::min(lo, 0.0), hi > lo ? hi : lo + 1, false};
}

std::string render_axes(const Chart& c, const Axis& x, const Axis& y, int w, int h, int l, int t, int b) {
  std::string s = fmt::format(R"~(<rect x="{}" y="{}" width="{}" height="{}" class="plot"/>)~", l, t, w - l - 12, h - t - b);
  for (double v : y.ticks()) {
    const double py = y.at(v, h - b, t);
    s += fmt::format(R"~(<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" class="grid"/><text x="{}" y="{:.1f}" class="tick" text-anchor="end">{}</text>)~",
                     l, w - 12, py, py, l - 4, py + 4, tick_label(v));
  }
  for (double v : x.ticks()) {
    const double px = x.at(v, l, w - 12);
    s += fmt::format(R"~(<text x="{:.1f}" y="{}" class="tick" text-anchor="middle">{}</text>)~", px, h - b + 16, tick_label(v));
  }
  s += fmt::format(R"~(<text x="{}" y="{}" class="axis" text-anchor="middle">step</text>)~", (l + w) / 2, h - 6);
  s += fmt::format(R"~(<text x="14" y="{}" class="axis" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>)~",
                   (t + h - b) / 2, (t + h - b) / 2, esc(c.y_label));
  return s;
}

std::string render_chart(const Chart& c, const Axis& x) {
  constexpr int w = 620, h = 250, l = 62, t = 12, b = 40;
  const Axis y = y_axis(c);
  const std::string id = "chart-" + c.metric;
  std::string s = fmt::format(R"~(<figure class="chart" data-metric="{}"><figcaption id="{}">{}</figcaption>)~", c.metric, id, esc(c.title));
  s += fmt::format(R"~(<svg viewBox="0 0 {} {}" role="img" aria-labelledby="{}">)~", w, h, id);
  s += fmt::format("<title>{}: {} against training step</title>", esc(c.title), esc(c.y_label));
  s += render_axes(c, x, y, w, h, l, t, b);
  for (const auto& se : c.series) {
    std::string line;
    for (const auto& [px, py] : se.points)
      if (std::isfinite(py)) line += fmt::format("{:.1f},{:.1f} ", x.at(px, l, w - 12), y.at(py, h - b, t));
    const bool dashed = se.split == "val" && c.metric == "loss";
    s += fmt::format(R"~(<g class="series" data-run="{}" data-split="{}" stroke="{}" fill="{}"><polyline points="{}" fill="none"{}/>)~",
                     esc(se.run), se.split, se.color, se.color, line, dashed ? R"~( stroke-dasharray="5 3")~" : "");
    for (const auto& [px, py] : se.points)
      s += fmt::format(R"~(<circle class="pt" cx="{:.1f}" cy="{:.1f}" r="2.2"><title>{} {} step {}: {:.6g}</title></circle>)~",
                       x.at(px, l, w - 12), std::isfinite(py) ? y.at(py, h - b, t) : double(h - b), esc(se.run),
                       se.split, px, py);
    s += "</g>";
  }
  s += "</svg><ul class=\"legend\">";
  for (const auto& se : c.series)
    s += fmt::format(R"~(<li><span class="swatch{}" style="background:{}"></span>{} ({})</li>)~",
                     se.split == "val" && c.metric == "loss" ? " dashed" : "", se.color, esc(se.run),
                     se.split == "val" ? "validation" : "training");
  return s + "</ul></figure>\n";
}

// At most about `most` points of a long curve (a 200k-step run drew every one: a 92 MB page): the points in order,
// split into most / 2 buckets, each kept by its lowest and highest value, so spikes and the first and last stay.
constexpr std::size_t kMaxPoints = 1000;  // per curve

std::vector<std::pair<double, double>> thin(std::vector<std::pair<double, double>> points, std::size_t most) {
  if (points.size() <= most) return points;
  const std::size_t buckets = most / 2;
  std::vector<std::pair<double, double>> out;
  for (std::size_t b = 0; b < buckets; ++b) {
    const std::size_t lo = b * points.size() / buckets, hi = (b + 1) * points.size() / buckets;
    std::size_t min_at = lo, max_at = lo;
    for (std::size_t i = lo; i < hi; ++i) {
      if (!(points[i].second >= points[min_at].second)) min_at = i;  // NaN counts as low: it stays visible
      if (points[i].second > points[max_at].second) max_at = i;
    }
    out.push_back(points[std::min(min_at, max_at)]);
    if (min_at != max_at) out.push_back(points[std::max(min_at, max_at)]);
  }
  if (out.back() != points.back()) out.push_back(points.back());
  return out;
}

std::vector<Chart> charts_of(const std::vector<RunData>& runs) {
  std::vector<Chart> charts = {
      {"loss", "Loss", "loss (nats per token, log scale)", true, false, {}},
      {"token_acc", "Token accuracy", "validation token accuracy", false, true, {}},
      {"seq_acc", "Sequence accuracy", "validation sequence accuracy", false, true, {}},
      {"lr", "Learning rate", "learning rate", false, false, {}},
      {"grad_norm", "Gradient norm", "global gradient norm (log scale)", true, false, {}},
      {"tokens_per_s", "Throughput", "tokens per second", false, false, {}},
  };
  for (std::size_t i = 0; i < runs.size(); ++i)
    for (auto& c : charts)
      for (const char* split : {"train", "val"}) {
        Series s{runs[i].label, split, kColors[i % std::size(kColors)], {}};
        for (const auto& e : runs[i].events)
          if (e.value("split", "") == split && e.contains(c.metric) && e[c.metric].is_number())
            s.points.emplace_back(e["step"].get<double>(), e[c.metric].get<double>());
        s.points = thin(std::move(s.points), kMaxPoints);
        if (!s.points.empty()) c.series.push_back(std::move(s));
      }
  return charts;
}

// ---- attention heatmaps ---------------------------------------------------------------------------------------

std::string blues(int level) {  // 0..15: white to dark blue
  const double f = level / 15.0;
  return fmt::format("rgb({},{},{})", int(255 - 247 * f), int(255 - 207 * f), int(255 - 148 * f));
}

// One (T, T) map: cells drawn as one path per colour level (small files), the exact weights in data-weights.
std::string render_heatmap(const std::vector<double>& w, std::int64_t t, const std::vector<std::string>& labels,
                           const std::string& caption) {
  const int cell = static_cast<int>(std::clamp<std::int64_t>(360 / t, 9, 26)), left = 54, top = 40;
  const int size = static_cast<int>(t) * cell, font = std::min(12, cell);
  std::string s = fmt::format(R"~(<figure class="heatmap"><figcaption>{}</figcaption><svg viewBox="0 0 {} {}" role="img" data-cell="{}" data-left="{}" data-top="{}")~",
                              esc(caption), left + size + 4, top + size + 4, cell, left, top);
  nlohmann::json rows = nlohmann::json::array();
  for (std::int64_t i = 0; i < t; ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (std::int64_t j = 0; j < t; ++j) row.push_back(std::round(w[static_cast<std::size_t>(i * t + j)] * 1e4) / 1e4);
    rows.push_back(row);
  }
  s += fmt::format(R"~( data-weights="{}" data-tokens="{}"><title>Attention weights, {}: rows are queries, columns keys; darker is more weight</title>)~",
                   esc(rows.dump()), esc(nlohmann::json(labels).dump()), esc(caption));
  std::vector<std::string> paths(17);  // 16 levels, then non-finite
  for (std::int64_t i = 0; i < t; ++i)
    for (std::int64_t j = 0; j < t; ++j) {
      const double v = w[static_cast<std::size_t>(i * t + j)];
      const int level = std::isfinite(v) ? static_cast<int>(std::lround(std::clamp(v, 0.0, 1.0) * 15)) : 16;
      paths[static_cast<std::size_t>(level)] += fmt::format("M{} {}h{}v{}h-{}z", left + j * cell, top + i * cell, cell, cell, cell);
    }
  for (int level = 0; level < 17; ++level)
    if (!paths[static_cast<std::size_t>(level)].empty())
      s += fmt::format(R"~(<path d="{}" fill="{}"/>)~", paths[static_cast<std::size_t>(level)], level < 16 ? blues(level) : "rgb(200,40,40)");
  for (std::int64_t j = 0; j < t; ++j) {
    const auto& lab = esc(labels[static_cast<std::size_t>(j)]);
    s += fmt::format(R"~(<text x="{}" y="{}" font-size="{}" text-anchor="middle">{}</text>)~", left + j * cell + cell / 2, top - 6, font, lab);
    s += fmt::format(R"~(<text x="{}" y="{}" font-size="{}" text-anchor="end">{}</text>)~", left - 4, top + j * cell + cell / 2 + font / 3, font, lab);
  }
  s += fmt::format(R"~(<text x="{}" y="12" font-size="11" class="axis">keys &#8594;</text><text font-size="11" class="axis" text-anchor="middle" transform="translate(10 {}) rotate(-90)">&#8592; queries</text>)~",
                   left, top + size / 2);
  return s + "</svg><output class=\"readout\">hover a cell to read its weight</output></figure>\n";
}

std::string colour_scale() {
  std::string s = R"~(<div class="scale" role="img" aria-label="colour scale: white is weight 0, dark blue is weight 1, red is not finite"><span>0</span>)~";
  for (int l = 0; l < 16; ++l) s += fmt::format(R"~(<i style="background:{}"></i>)~", blues(l));
  return s + R"~(<span>1</span> <i style="background:rgb(200,40,40)"></i><span>not finite</span></div>)~";
}

// ---- one run's section --------------------------------------------------------------------------------------------

// val: the validation inputs (N, T), of which the first example is shown.
std::string attention_section(const TrainedModel& tm, const Tensor& val) {
  if (val.size(0) == 0) return "<p>No validation example to show.</p>";
  const std::int64_t t = std::min(val.size(1), kMaxShownTokens);  // longer examples are cut
  const Tensor x = narrow(narrow(val, 0, 0, 1), 1, 0, t);
  const Tensor maps = attention_maps(*tm.model, x);  // (L, 1, H, T, T)
  std::vector<std::string> labels;
  for (double v : x.to_vector()) labels.push_back(tm.token_label(static_cast<std::int64_t>(v)));
  std::string s = fmt::format("<p>The first validation example{}; rows are queries, columns keys.</p>{}<div class=\"maps\">",
                              val.size(1) > t ? fmt::format(" (its first {} of {} tokens)", t, val.size(1)) : "", colour_scale());
  for (std::int64_t layer = 0; layer < maps.size(0); ++layer)
    for (std::int64_t head = 0; head < maps.size(2); ++head) {
      s += render_heatmap(head_weights(maps, layer, head).to_vector(), t, labels, fmt::format("layer {}, head {}", layer, head));
    }
  return s + "</div>";
}

std::string final_metrics(const RunData& r) {
  const nlohmann::json* val = nullptr;
  const nlohmann::json* tr = nullptr;
  for (const auto& e : r.events) (e.value("split", "") == "val" ? val : tr) = &e;
  std::string s = "<table><tr><th scope=\"row\">steps</th><td>" + (tr ? tr->at("step").dump() : "0") + "</td></tr>";
  if (tr) s += fmt::format("<tr><th scope=\"row\">last training loss</th><td>{:.4f}</td></tr>", tr->value("loss", NAN));
  if (val)
    s += fmt::format("<tr><th scope=\"row\">validation loss</th><td>{:.4f}</td></tr><tr><th scope=\"row\">token accuracy</th>"
                     "<td>{:.4f}</td></tr><tr><th scope=\"row\">sequence accuracy</th><td>{:.4f}</td></tr>",
                     val->value("loss", NAN), val->value("token_acc", NAN), val->value("seq_acc", NAN));
  return s + "</table>";
}

std::string model_section(const TrainedModel& tm) {
  const ModelConfig& mc = tm.model->config();
  return fmt::format("<h3>Model</h3><pre>{}</pre><p>{} parameters; {:.0f} forward FLOPs per token at sequence length {}.</p>",
                     esc(tm.model->summary()), tm.model->num_parameters(), flops_per_token(mc, tm.config.data.seq_len),
                     tm.config.data.seq_len);
}

std::string sample_section(const TrainedModel& tm, const Tensor& val) {
  std::vector<std::int64_t> prompt;
  for (double v : narrow(narrow(val, 0, 0, 1), 1, 0, std::min<std::int64_t>(16, val.size(1))).to_vector())
    prompt.push_back(static_cast<std::int64_t>(v));
  std::string text, start;
  for (auto id : prompt) start += tm.token_text(id);
  for (auto id : sample_tokens(tm, prompt, 200, 0.8, 0)) text += tm.token_text(id);
  return fmt::format("<h3>Sample</h3><p>200 {} after a validation prompt (temperature 0.8, seed 0):</p>"
                     "<pre class=\"sample\"><mark>{}</mark>{}</pre>", tm.tokenizer ? "tokens" : "characters",
                     esc(displayable_utf8(start)), esc(displayable_utf8(text)));
}

std::string run_section(const RunData& r, std::size_t index) {
  const std::string name = fs::path(r.dir).filename().string();
  std::string s = fmt::format(R"~(<section class="run"><h2><span class="swatch" style="background:{}"></span>{}</h2><p class="path">{}</p>)~",
                              kColors[index % std::size(kColors)], esc(r.label), esc(r.dir));
  if (r.skipped > 0)
    s += fmt::format("<p class=\"note\">metrics.jsonl: skipped {} line{} that {} not a qkv record (the first: line "
                     "{})</p>", r.skipped, r.skipped == 1 ? "" : "s", r.skipped == 1 ? "is" : "are", r.first_skipped);
  s += "<h3>Final metrics</h3>" + final_metrics(r);
  // A command a reader pastes into a shell: every word quoted for it (a run.name of $(...) stays text).
  s += fmt::format("<h3>Reproduce</h3><pre><code>qkv train {} {}</code></pre>",
                   esc(shell_quote((fs::path(r.dir) / "config.toml").string())),
                   esc(shell_quote("run.name=" + toml_quote(name + "-again"))));
  s += "<details open><summary>Resolved config</summary><pre class=\"config\">" + esc(r.config_toml) + "</pre></details>";
  if (!r.model) return s + "<p>" + esc(r.model_note) + "</p></section>\n";
  if (!r.model_note.empty()) s += "<p class=\"note\">" + esc(r.model_note) + "</p>";
  s += model_section(*r.model);
  const auto data = r.model->data();  // the examples shown
  const Tensor& val = data->validation().inputs;
  s += "<h3>Attention</h3>" + attention_section(*r.model, val);
  if (r.model->text() && r.model->model->config().causal) s += sample_section(*r.model, val);
  return s + "</section>\n";
}

constexpr const char* kStyle = R"~(
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1320px;margin:0 auto;padding:16px 24px;color:#1a1a1a}
h1{font-size:1.6em;margin:.2em 0}h2{border-bottom:1px solid #ccc;margin-top:1.6em}h3{margin-bottom:.3em}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
figure{margin:0}figcaption{font-weight:600}svg{width:100%;height:auto}
.plot{fill:#fafafa;stroke:#bbb}.grid{stroke:#e4e4e4}.tick{font-size:11px;fill:#444}.axis{font-size:12px;fill:#222}
polyline{stroke-width:1.6}.legend{list-style:none;padding:0;margin:2px 0;font-size:13px}.legend li{display:inline-block;margin-right:14px}
.swatch{display:inline-block;width:14px;height:4px;margin:0 6px 3px 0;vertical-align:middle}.swatch.dashed{background-image:none;opacity:.55}
.maps{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}.heatmap text{fill:#333}
.scale i{display:inline-block;width:14px;height:12px}.scale span{margin:0 6px;font-size:12px}
pre{background:#f5f5f5;padding:8px;overflow-x:auto;font-size:12.5px}.config{column-width:15em}.sample{white-space:pre-wrap}.path,.note{color:#555}
table{border-collapse:collapse}th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}
output.readout{display:block;font-size:12px;color:#444;min-height:1.2em}
@media print{body{max-width:none;font-size:11px}.charts{grid-template-columns:1fr 1fr}details>summary{display:none}section{break-inside:avoid-page}}
)~";

// Hover read-outs of heatmap cells; the page works (and prints) without it.
constexpr const char* kScript = R"~(
document.querySelectorAll('.heatmap svg').forEach(function(svg){
  var w=JSON.parse(svg.dataset.weights),tok=JSON.parse(svg.dataset.tokens),out=svg.parentNode.querySelector('output');
  var cell=+svg.dataset.cell,left=+svg.dataset.left,top=+svg.dataset.top;
  svg.addEventListener('mousemove',function(e){
    var p=svg.createSVGPoint();p.x=e.clientX;p.y=e.clientY;p=p.matrixTransform(svg.getScreenCTM().inverse());
    var i=Math.floor((p.y-top)/cell),j=Math.floor((p.x-left)/cell);
    if(i>=0&&j>=0&&i<w.length&&j<w.length)out.textContent='query '+i+' "'+tok[i]+'" \u2192 key '+j+' "'+tok[j]+'": '+w[i][j];
  });
});
)~";

}  // namespace

std::string render_report(const std::vector<std::string>& run_dirs) {
  QKV_CHECK(!run_dirs.empty(), "report: give at least one run directory");
  std::vector<RunData> runs;
  for (const auto& d : run_dirs) runs.push_back(read_run(d));
  const std::vector<Chart> charts = charts_of(runs);
  const Axis x = x_axis(charts);
  std::string names;
  for (const auto& r : runs) names += (names.empty() ? "" : ", ") + r.label;
  std::string html = fmt::format("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
                                 "content=\"width=device-width, initial-scale=1\"><title>qkv report: {}</title><style>{}</style>"
                                 "</head><body><header><h1>qkv report: {}</h1><p>{} run{}, from metrics.jsonl, config.toml "
                                 "and the weights in each run directory (qkv {}).</p></header><main>",
                                 esc(names), kStyle, esc(names), runs.size(), runs.size() == 1 ? "" : "s", version());
  html += "<h2>Curves</h2><div class=\"charts\">";
  for (const auto& c : charts) html += render_chart(c, x);
  html += "</div>";
  for (std::size_t i = 0; i < runs.size(); ++i) html += run_section(runs[i], i);
  return html + "</main><script>" + kScript + "</script></body></html>\n";
}

std::string write_report(const std::vector<std::string>& run_dirs, const std::string& out) {
  const std::string path = out.empty() ? (fs::path(run_dirs.at(0)) / "report.html").string() : out;
  write_file_atomic(path, render_report(run_dirs));
  return path;
}

}  // namespace qkv
