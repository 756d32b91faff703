#include "qkv/train/run/memory.h"

#include <qkv/train/io/files.h>

#include <filesystem>

namespace qkv {
namespace fs = std::filesystem;
namespace {

// What reading a data file holds: its bytes and the ids made from them (text: 2 or 4 bytes per character, jsonl:
// 8 per id of at least 2 bytes of JSON), at most 5 times the file. Generated tasks read nothing.
double data_file_bytes(const DataOptions& d) {
  if (d.task != "text" && d.task != "jsonl") return 0;
  double bytes = 0;
  for (const std::string& p : {d.path, d.val_path}) {
    std::error_code ec;
    if (!p.empty() && fs::is_regular_file(p, ec)) bytes += double(fs::file_size(p, ec));
  }
  return 5 * bytes;
}

}  // namespace

MemoryEstimate estimate_memory(const Config& c, std::int64_t vocab) {
  // Float32 throughout. Parameters: weights, gradients and two Adam moments. Activations: what forward keeps for
  // backward, per token (B x T of them), generously counted by the kind. Attention keeps one log-sum-exp per row
  // and head, not its T x T weights (core/ops/attention.cpp), so nothing here grows with T^2.
  const ModelConfig m = c.model_config(vocab);
  const ModelKind& kind = model_kind(m.kind);
  // One micro-batch's activations are alive at a time (train.grad_accum_steps).
  const double t = double(c.data.seq_len), tokens = double(c.train.batch_size / c.train.grad_accum_steps) * t;
  MemoryEstimate e;
  e.parameters = kind.parameters(m);
  e.parameter_bytes = 16 * e.parameters;
  e.activation_bytes = 4 * kind.activations_per_token(m) * tokens;
  e.data_bytes = 16 * double(c.data.val_size) * t + data_file_bytes(c.data);  // + validation inputs and targets
  return e;
}

// Refuses a run whose estimate exceeds the machine's memory, naming the keys that drive each part.
void check_memory(const Config& c, std::int64_t vocab) {
  const MemoryEstimate e = estimate_memory(c, vocab);
  const double total = e.parameter_bytes + e.activation_bytes + e.data_bytes;
  const auto have = static_cast<double>(physical_memory_bytes());
  QKV_CHECK(have == 0 || total <= have,
            "config: this run needs about {:.1f} GB but the machine has {:.1f} GB: parameters and optimizer state {:.1f} "
            "GB ({:.3g} parameters: model.d_model, model.layers, model.d_ff, vocabulary), activations {:.1f} GB "
            "(train.batch_size / train.grad_accum_steps x data.seq_len x model.d_model, model.d_ff, model.layers; "
            "model.recompute keeps less), data {:.1f} GB "
            "(up to 5x the size of data.path, and data.val_size x data.seq_len)",
            total / 1e9, have / 1e9, e.parameter_bytes / 1e9, e.parameters, e.activation_bytes / 1e9, e.data_bytes / 1e9);
}

}  // namespace qkv
