#include "qkv/train/use/attention_view.h"

#include <qkv/core/autograd.h>
#include <qkv/core/ops.h>
#include <qkv/train/io/files.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace qkv {

Tensor attention_maps(LanguageModel& model, const Tensor& ids) {
  NoGradGuard no_grad;
  model.eval();
  return model.attend(ids).weights;
}

Tensor head_weights(const Tensor& maps, std::int64_t layer, std::int64_t head) {
  QKV_CHECK(layer >= 0 && layer < maps.size(0), "attention: --layer {} is out of range (the model has {} layer{})",
            layer, maps.size(0), maps.size(0) == 1 ? "" : "s");
  QKV_CHECK(head >= 0 && head < maps.size(2), "attention: --head {} is out of range (the model has {} head{})", head,
            maps.size(2), maps.size(2) == 1 ? "" : "s");
  const std::int64_t t = maps.size(3);
  return reshape(narrow(narrow(narrow(maps, 0, layer, 1), 1, 0, 1), 2, head, 1), {t, t});
}

std::vector<std::int64_t> rows_not_distributions(const Tensor& weights) {
  const std::int64_t t = weights.size(-1), rows = weights.numel() / std::max<std::int64_t>(1, t);
  const auto w = weights.to_vector();
  std::vector<std::int64_t> bad;
  for (std::int64_t i = 0; i < rows; ++i) {
    double sum = 0;
    for (std::int64_t j = 0; j < t; ++j) sum += w[static_cast<std::size_t>(i * t + j)];
    if (!(std::abs(sum - 1.0) <= 1e-3)) bad.push_back(i);  // NaN sums land here too
  }
  return bad;
}

namespace {
// A token as one line of text: newlines, tabs and other control bytes escaped (a token of real text may be "\n").
std::string printable(const std::string& token) {
  std::string out;
  for (const unsigned char c : token) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}
}  // namespace

std::string render_attention(const Tensor& weights, const std::vector<std::string>& token_texts) {
  static const char* kShades = " .:-=+*#%@";
  std::vector<std::string> tokens;
  for (const auto& s : token_texts) tokens.push_back(printable(s));
  const auto t = static_cast<std::int64_t>(tokens.size());
  QKV_CHECK(weights.dim() == 2 && weights.size(0) == t && weights.size(1) == t,
            "render_attention: expected ({0}, {0}) weights for {0} tokens, got shape {1}", t, weights.shape().str());
  const auto w = weights.to_vector();
  const auto bad = rows_not_distributions(weights);
  std::size_t width = 1;
  for (const auto& s : tokens) width = std::max(width, s.size());
  std::string out = std::string(width + 3, ' ');
  for (std::int64_t j = 0; j < t; ++j) out += fmt::format("{:>{}}", tokens[static_cast<std::size_t>(j)], width + 1);
  out += "   (keys)\n";
  for (std::int64_t i = 0; i < t; ++i) {
    out += fmt::format("{:>{}} | ", tokens[static_cast<std::size_t>(i)], width);
    for (std::int64_t j = 0; j < t; ++j) {
      const double raw = w[static_cast<std::size_t>(i * t + j)];
      const double v = std::clamp(raw, 0.0, 1.0);  // NaN would index out of the table: '?' instead
      out += std::string(width, ' ') + (std::isfinite(raw) ? kShades[std::min(9, static_cast<int>(v * 9.999))] : '?');
    }
    out += std::find(bad.begin(), bad.end(), i) != bad.end() ? "   <- does not sum to 1\n" : "\n";
  }
  return out + fmt::format("{:>{}}   (rows: queries; darker = more weight, '@' ~ 1, '?' not finite)\n", "", width);
}

// An SVG heatmap of a (T, T) attention matrix with the tokens as axis labels.
std::string attention_svg(const Tensor& w, const std::vector<std::string>& labels, const std::string& title) {
  const std::int64_t t = w.size(0);
  const auto v = w.to_vector();
  const int cell = 28, left = 60, top = 70;
  const int size = static_cast<int>(t) * cell;
  const auto esc = xml_escape;
  const auto bad = rows_not_distributions(w);
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"monospace\" "
      "font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"20\">{}</text>\n"
      "<text x=\"{}\" y=\"40\" font-size=\"11\">keys</text>\n<text x=\"4\" y=\"{}\" font-size=\"11\">queries</text>\n",
      std::max<std::size_t>(left + size + (bad.empty() ? 20 : 150), left + 8 * title.size() + 20), top + size + 20, left, esc(title), left,
      top - 20);
  for (std::int64_t j = 0; j < t; ++j)
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + j * cell + cell / 2, top - 6,
                       esc(labels[static_cast<std::size_t>(j)]));
  for (std::int64_t i = 0; i < t; ++i) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", left - 6, top + i * cell + cell / 2 + 4,
                       esc(labels[static_cast<std::size_t>(i)]));
    for (std::int64_t j = 0; j < t; ++j) {
      const double raw = v[static_cast<std::size_t>(i * t + j)], x = std::isfinite(raw) ? std::clamp(raw, 0.0, 1.0) : 0.0;
      const int shade = static_cast<int>(255 - 200 * x);  // white (0) to dark blue (1); NaN never reaches the cast
      const std::string fill = std::isfinite(raw) ? fmt::format("rgb({},{},255)", shade, shade) : "rgb(200,40,40)";
      svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n",
                         left + j * cell, top + i * cell, cell - 1, cell - 1, fill,
                         std::isfinite(raw) ? fmt::format("{:.4f}", x) : "not finite");
    }
    if (std::find(bad.begin(), bad.end(), i) != bad.end())
      svg += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"rgb(200,40,40)\">does not sum to 1</text>\n", left + size + 4,
                         top + i * cell + cell / 2 + 4);
  }
  return svg + "</svg>\n";
}

}  // namespace qkv
