#include "qkv/train/dist/gradients.h"

#include <qkv/core/autograd.h>
#include <qkv/core/dispatch.h>
#include <qkv/core/tensor.h>
#include <qkv/optim/optimizer.h>
#include <qkv/train/dist/detail.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

namespace qkv {

using dist_detail::Timed;
#ifdef QKV_HAVE_MPI
using dist_detail::check_mpi;
#endif

Shard::Shard(const std::vector<Tensor>& params, const Comm& comm) : comm_(comm), params_(params) {
  QKV_CHECK(!params.empty(), "optim.shard: the model has no parameters");
  for (const Tensor& p : params)
    QKV_CHECK(p.dtype() == params[0].dtype() && is_floating(p.dtype()),
              "optim.shard: every parameter must have one float dtype, got {} and {}", dtype_name(params[0].dtype()),
              dtype_name(p.dtype()));
  // Largest first onto the least loaded rank: balanced shards, the same on every rank (ties by index).
  std::vector<std::size_t> by_size(params.size());
  for (std::size_t i = 0; i < by_size.size(); ++i) by_size[i] = i;
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](std::size_t a, std::size_t b) { return params[a].numel() > params[b].numel(); });
  std::vector<std::int64_t> load(static_cast<std::size_t>(comm.size()), 0);
  owner_.assign(params.size(), 0);
  for (std::size_t i : by_size) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    owner_[i] = static_cast<int>(least);
    load[static_cast<std::size_t>(least)] += params[i].numel();
  }
  for (int r = 0; r < comm.size(); ++r)
    for (std::size_t i = 0; i < params.size(); ++i)
      if (owner_[i] == r) order_.push_back(i);
  for (std::size_t i = 0; i < params.size(); ++i)
    if (owns(i)) owned_.push_back(params[i]);
  int at = 0;
  for (int r = 0; r < comm.size(); ++r) {
    QKV_CHECK(load[static_cast<std::size_t>(r)] < (std::int64_t{1} << 31), "optim.shard: a shard over 2^31 elements");
    counts_.push_back(static_cast<int>(load[static_cast<std::size_t>(r)]));
    displs_.push_back(at);
    at += counts_.back();
  }
}

// gradients: reduce-scatter of the flat gradients (this rank keeps the sums of its parameters, drops the rest);
// otherwise: all-gather of the parameters from their owners.
template <class T>
void Shard::exchange(bool gradients) const {
  std::vector<T> flat(static_cast<std::size_t>(total_elements()), T(0));
  std::size_t at = 0;
  for (std::size_t i : order_) {
    const Tensor& p = params_[i];
    const Tensor src = gradients ? p.grad() : p;
    const auto n = static_cast<std::size_t>(p.numel());
    if (src.defined() && (gradients || owns(i))) std::memcpy(flat.data() + at, src.data<T>(), n * sizeof(T));
    at += n;
  }
#ifdef QKV_HAVE_MPI
  const MPI_Datatype type = std::is_same_v<T, float> ? MPI_FLOAT : MPI_DOUBLE;
  Timed timed(comm_.comm_seconds_);
  if (gradients)
    check_mpi(MPI_Reduce_scatter(MPI_IN_PLACE, flat.data(), counts_.data(), type, MPI_SUM, MPI_COMM_WORLD),
              "reduce-scatter of the gradients");
  else
    check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, type, flat.data(), counts_.data(), displs_.data(), type, MPI_COMM_WORLD),
              "all-gather of the parameters");
#endif
  // MPI_Reduce_scatter in place leaves this rank's block at the front of the buffer.
  const T* result = gradients ? flat.data() : nullptr;
  at = 0;
  std::size_t mine_at = 0;
  for (std::size_t i : order_) {
    const Tensor& p = params_[i];
    const auto n = static_cast<std::size_t>(p.numel());
    if (gradients) {
      if (owns(i)) {
        if (!p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), p.dtype()));
        std::memcpy(p.grad().data<T>(), result + mine_at, n * sizeof(T));
        mine_at += n;
      } else {
        p.zero_grad();  // not this rank's: Optimizer::step skips it
      }
    } else if (!owns(i)) {
      std::memcpy(p.data<T>(), flat.data() + at, n * sizeof(T));
      p.bump_version();
    }
    at += n;
  }
}

void Shard::reduce_scatter_gradients() const {
  dispatch("optim.shard", params_[0].dtype(), [&](auto tag) { exchange<decltype(tag)>(true); });
}

void Shard::all_gather_parameters() const {
  dispatch("optim.shard", params_[0].dtype(), [&](auto tag) { exchange<decltype(tag)>(false); });
}

// Only this rank's parameters hold gradients now: the sums of squares of every rank's part give the global norm.
double Shard::grad_norm() const { return std::sqrt(comm_.sum(grad_sq_sum(owned_))); }

double Shard::clip_grad_norm(double max_norm) const {
  const double norm = grad_norm();
  clip_to_norm(owned_, norm, max_norm);
  return norm;
}

struct GradientBuckets::State {
  struct Bucket {
    std::vector<std::size_t> params;  // indices into State::params
    std::vector<std::size_t> at;      // each one's byte offset in `bytes`
    std::vector<std::byte> bytes;
    DType dtype = kFloat32;
    std::size_t waiting = 0;  // parameters whose gradient is not final yet in this sweep
#ifdef QKV_HAVE_MPI
    MPI_Request request = MPI_REQUEST_NULL;
#endif
  };
  const Comm& comm;
  std::vector<Tensor> params;
  std::vector<Bucket> buckets;
  std::unordered_map<const TensorImpl*, std::size_t> index;  // parameter by tensor
  std::vector<std::pair<std::size_t, std::size_t>> place;      // per parameter: bucket, slot
  std::vector<bool> copied;   // per parameter, in this sweep
  std::size_t started = 0;    // buckets [0, started) have started, in order
  std::size_t polled = 0;     // buckets before it are known to be done
  std::size_t early = 0;      // buckets started before backward ended

  State(const Comm& c, const std::vector<Tensor>& p) : comm(c), params(p), place(p.size()), copied(p.size()) {}
  void add(std::size_t param, std::size_t bucket_bytes);
  void start_sweep();
  void ready(std::size_t param);
  void start_ready();
  void poll();
  void finish();
};

// Parameters are taken last first; a bucket closes at `bucket_bytes` or when the dtype changes.
void GradientBuckets::State::add(std::size_t param, std::size_t bucket_bytes) {
  const Tensor& p = params[param];
  const std::size_t n = static_cast<std::size_t>(p.numel()) * itemsize(p.dtype());
  if (buckets.empty() || buckets.back().dtype != p.dtype() ||
      (bucket_bytes > 0 && buckets.back().bytes.size() + n > bucket_bytes && !buckets.back().params.empty()))
    buckets.emplace_back().dtype = p.dtype();
  Bucket& b = buckets.back();
  QKV_CHECK(b.bytes.size() + n < (std::size_t{1} << 31), "gradient buckets: a bucket of over 2 GiB");
  index[p.impl()] = param;
  place[param] = {buckets.size() - 1, b.params.size()};
  b.params.push_back(param);
  b.at.push_back(b.bytes.size());
  b.bytes.resize(b.bytes.size() + n);
}

// A parameter's gradient is final: into its bucket (zeros when undefined); full buckets start, in order.
void GradientBuckets::State::ready(std::size_t param) {
  if (copied[param]) return;
  copied[param] = true;
  const auto [bi, slot] = place[param];
  Bucket& b = buckets[bi];
  const Tensor g = params[param].grad();
  const std::size_t n = static_cast<std::size_t>(params[param].numel()) * itemsize(b.dtype);
  if (g.defined()) std::memcpy(b.bytes.data() + b.at[slot], g.raw_data(), n);
  else std::memset(b.bytes.data() + b.at[slot], 0, n);
  --b.waiting;
  start_ready();
}

void GradientBuckets::State::start_ready() {
  Timed timed(comm.comm_seconds_);
  for (; started < buckets.size() && buckets[started].waiting == 0; ++started) {
#ifdef QKV_HAVE_MPI
    if (!comm.distributed()) continue;  // a job of one: the sums are the gradients
    Bucket& b = buckets[started];
    const int count = static_cast<int>(b.bytes.size() / itemsize(b.dtype));
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, b.bytes.data(), count, b.dtype == kFloat64 ? MPI_DOUBLE : MPI_FLOAT,
                             MPI_SUM, MPI_COMM_WORLD, &b.request),
              "all-reduce of the gradients");
#endif
  }
  poll();
}

// MPI moves non-blocking collectives on only inside MPI calls: a test of the oldest unfinished one does that.
void GradientBuckets::State::poll() {
#ifdef QKV_HAVE_MPI
  if (!comm.distributed()) return;
  for (; polled < started; ++polled) {
    int done = 0;
    check_mpi(MPI_Test(&buckets[polled].request, &done, MPI_STATUS_IGNORE), "all-reduce of the gradients");
    if (!done) return;
  }
#endif
}

// After backward: parameters it did not reach count as zeros; wait for every bucket; the sums into .grad().
void GradientBuckets::State::finish() {
  for (std::size_t i = 0; i < params.size(); ++i) ready(i);
  {
    Timed timed(comm.comm_seconds_);
#ifdef QKV_HAVE_MPI
    for (Bucket& b : buckets)
      if (comm.distributed()) check_mpi(MPI_Wait(&b.request, MPI_STATUS_IGNORE), "all-reduce of the gradients");
#endif
  }
  for (const Bucket& b : buckets)
    for (std::size_t slot = 0; slot < b.params.size(); ++slot) {
      const Tensor& p = params[b.params[slot]];
      if (!p.grad().defined()) p.set_grad(Tensor::zeros(p.shape(), p.dtype()));
      std::memcpy(p.grad().raw_data(), b.bytes.data() + b.at[slot],
                  static_cast<std::size_t>(p.numel()) * itemsize(b.dtype));
    }
}

GradientBuckets::GradientBuckets(const std::vector<Tensor>& params, const Comm& comm, std::size_t bucket_bytes)
    : s_(std::make_unique<State>(comm, params)) {
  for (std::size_t i = params.size(); i-- > 0;) s_->add(i, bucket_bytes);
}

GradientBuckets::~GradientBuckets() = default;

std::size_t GradientBuckets::size() const { return s_->buckets.size(); }
std::size_t GradientBuckets::started_early() const { return s_->early; }

void GradientBuckets::State::start_sweep() {
  for (Bucket& b : buckets) b.waiting = b.params.size();
  std::fill(copied.begin(), copied.end(), false);
  started = polled = 0;
}

void GradientBuckets::backward(const Tensor& loss) {
  State& s = *s_;
  s.start_sweep();
  {
    LeafGradHook hook([&s](const Tensor& leaf) {
      if (const auto it = s.index.find(leaf.impl()); it != s.index.end()) s.ready(it->second);
    });
    loss.backward();
  }
  s.early = s.started;
  s.finish();
}

void GradientBuckets::sum() {
  s_->start_sweep();
  s_->early = 0;
  s_->finish();
}


void sum_gradients(const Comm& comm, const std::vector<Tensor>& params) {
  if (!comm.distributed()) return;
  GradientBuckets(params, comm, 0).sum();
}

}  // namespace qkv
