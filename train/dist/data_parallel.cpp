#include "qkv/train/dist/data_parallel.h"

#include <qkv/core/hash.h>
#include <qkv/core/ops.h>
#include <qkv/layers/models.h>
#include <qkv/layers/save.h>

#include <fmt/ranges.h>

#include <fstream>
#include <iterator>
#include <span>

namespace qkv {
namespace {

// The bytes of this program, so ranks started from different builds are told apart.
std::uint64_t binary_hash() {
  std::ifstream in("/proc/self/exe", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fnv1a(bytes.data(), bytes.size());
}

}  // namespace

void DataParallel::check_ranks(const std::string& config_toml, std::int64_t batch_size,
                               std::int64_t grad_accum_steps) const {
  if (!comm_.distributed()) return;
  QKV_CHECK(batch_size % comm_.size() == 0,
            "train.batch_size = {} is not divisible by the {} ranks of this job: each rank takes an equal slice of "
            "the global batch (choose a batch size that is a multiple of mpirun -np)",
            batch_size, comm_.size());
  QKV_CHECK((batch_size / comm_.size()) % grad_accum_steps == 0,
            "train.grad_accum_steps = {} does not divide the {} sequences each of the {} ranks takes of train.batch_size "
            "= {}: each micro-batch is an equal share of a rank's slice",
            grad_accum_steps, batch_size / comm_.size(), comm_.size(), batch_size);
  const auto configs = comm_.gather(fnv1a(config_toml.data(), config_toml.size()));
  const auto binaries = comm_.gather(binary_hash());
  const auto hosts = comm_.hosts();
  std::vector<std::string> odd;
  for (std::size_t r = 1; r < configs.size(); ++r) {
    if (configs[r] != configs[0]) odd.push_back(fmt::format("rank {} (on {}) has a different config", r, hosts[r]));
    if (binaries[r] != binaries[0]) odd.push_back(fmt::format("rank {} (on {}) runs a different qkv binary", r, hosts[r]));
  }
  QKV_CHECK(odd.empty(), "the ranks of this job disagree with rank 0 (on {}): {}; every machine needs the same qkv "
            "build and the same config and overrides", hosts[0], fmt::join(odd, "; "));
}

Batch DataParallel::slice(const Batch& global) const {
  if (!comm_.distributed()) return global;
  const std::int64_t rows = global.inputs.size(0) / comm_.size(), first = comm_.rank() * rows;
  return {narrow(global.inputs, 0, first, rows).clone(), narrow(global.targets, 0, first, rows).clone()};
}

Batch DataParallel::next_batch(Dataset& data, std::int64_t batch_size) const {
  if (!comm_.distributed()) return data.next_batch(batch_size);
  const std::int64_t rows = batch_size / comm_.size();
  return data.next_rows(batch_size, comm_.rank() * rows, rows);
}

// The same seed gives every rank the same weights, but a different build or CPU might not: rank 0's are sent.
void DataParallel::share_model(LanguageModel& model, std::int64_t batch_size) const {
  if (!comm_.distributed()) return;
  const std::vector<Tensor> params = model.parameters();
  comm_.broadcast_values(params);
  std::uint64_t h = fnv1a(nullptr, 0);
  for (const Tensor& p : params) h = fnv1a(p.raw_data(), static_cast<std::size_t>(p.numel()) * itemsize(p.dtype()), h);
  const auto all = comm_.gather(h);
  for (std::size_t r = 1; r < all.size(); ++r)
    QKV_CHECK(all[r] == all[0], "rank {}'s weights differ from rank 0's after the broadcast", r);
  const std::int64_t rows = batch_size / comm_.size();
  model.set_batch_slice(comm_.rank() * rows, batch_size);
}

void DataParallel::share_gradients(Optimizer& optimizer, bool shard, double bucket_mb) {
  if (!comm_.distributed()) return;
  if (!shard) {
    buckets_ = std::make_unique<GradientBuckets>(optimizer.parameters(), comm_, static_cast<std::size_t>(bucket_mb * 1e6));
    return;
  }
  shard_ = std::make_unique<Shard>(optimizer.parameters(), comm_);
  optimizer.retain_state([&](std::size_t i) { return shard_->owns(i); });
}

void DataParallel::backward(const Tensor& loss) const {
  if (buckets_) buckets_->backward(loss);  // summed across ranks, overlapping backward
  else loss.backward();
  if (shard_) shard_->reduce_scatter_gradients();  // each rank the sums of its own parameters
}

double DataParallel::clip_or_norm(const std::vector<Tensor>& params, double clip) const {
  if (shard_) return clip > 0 ? shard_->clip_grad_norm(clip) : shard_->grad_norm();  // from every rank's part
  return clip > 0 ? clip_grad_norm(params, clip) : grad_norm(params);
}

void DataParallel::after_step() const {
  if (shard_) shard_->all_gather_parameters();
}

OptimizerState DataParallel::optimizer_state(const Optimizer& optimizer) const {
  OptimizerState st = optimizer.state_dict();
  if (!shard_) return st;
  // Each rank's state tensors and its parameters' step counts ("<param>.step", as metadata) to rank 0.
  std::vector<std::pair<std::string, Tensor>> mine(st.tensors.begin(), st.tensors.end());
  std::map<std::string, std::string> steps;
  for (const auto& [key, v] : st.scalars)
    if (key.ends_with(".step")) steps.emplace(key, fmt::format("{}", static_cast<std::int64_t>(v)));
  const auto pieces = comm_.gather_to_lead(to_safetensors_bytes(mine, steps));
  for (const std::string& piece : pieces) {
    auto part = parse_safetensors(std::as_bytes(std::span(piece.data(), piece.size())), "a rank's state");
    for (auto& [name, t] : part.tensors) st.tensors.emplace(name, t.to(optimizer.parameters().front().dtype()));
    for (const auto& [key, v] : part.metadata) st.scalars.emplace(key, std::stod(v));
  }
  return st;
}

}  // namespace qkv
