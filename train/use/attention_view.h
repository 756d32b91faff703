#pragma once
// Views of a model's attention shared by `qkv attention`, the summary after `qkv train` and `qkv report`: the
// weights of one layer and head, as text, as an SVG heatmap, and the rows that are not distributions.
#include <qkv/layers/models.h>

#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

/// Past this many tokens an attention map is cut (the report) or not printed (after training): a 64 x 64 map per
/// head no longer fits a terminal line or reads on a page.
inline constexpr std::int64_t kMaxShownTokens = 32;

/// Every layer's and head's attention weights (L, B, H, T, T) for ids (B, T), in eval mode without a graph.
Tensor attention_maps(LanguageModel& model, const Tensor& ids);
/// One (T, T) map of attention_maps' (L, 1, H, T, T); a layer or head out of range is a qkv::Error saying how many
/// the model has.
Tensor head_weights(const Tensor& maps, std::int64_t layer, std::int64_t head);

/// An attention matrix (T, T) as text: one row per query, one shaded cell per key (" .:-=+*#%@"), with tokens.
std::string render_attention(const Tensor& weights, const std::vector<std::string>& tokens);
/// An SVG heatmap of a (T, T) attention matrix with the tokens as axis labels and `title` above.
std::string attention_svg(const Tensor& weights, const std::vector<std::string>& labels, const std::string& title);
/// The rows of (..., T) attention weights that are not distributions: a value not finite, or a sum off 1 by more
/// than 1e-3 (finite inputs whose scores overflow float32 give such rows; the renderers mark them).
std::vector<std::int64_t> rows_not_distributions(const Tensor& weights);

}  // namespace qkv
