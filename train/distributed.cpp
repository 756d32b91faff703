#include "qkv/train/distributed.h"

#include <qkv/core/autograd.h>
#include <qkv/core/dispatch.h>
#include <qkv/core/tensor.h>
#include <qkv/optim/optimizer.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include <unistd.h>

#ifdef QKV_HAVE_MPI
#include <mpi.h>
#endif

namespace qkv {
namespace {

// Times a collective into comm_seconds.
class Timed {
 public:
  explicit Timed(double& total) : total_(total), t0_(std::chrono::steady_clock::now()) {}
  ~Timed() { total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }
  Timed(const Timed&) = delete;
  Timed& operator=(const Timed&) = delete;

 private:
  double& total_;
  std::chrono::steady_clock::time_point t0_;
};

#ifdef QKV_HAVE_MPI
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("MPI: {} failed: {}", what, std::string(text, static_cast<std::size_t>(len)));
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
#endif

}  // namespace

bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

Comm::Comm() {
#ifdef QKV_HAVE_MPI
  if (!launched_by_mpirun()) return;
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    check_mpi(MPI_Init(nullptr, nullptr), "MPI_Init");
    std::atexit(finalize_at_exit);
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  static MPI_Comm failures = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &failures), "MPI_Comm_dup");
  failure_comm_ = &failures;
#else
  QKV_CHECK(!launched_by_mpirun(), "this qkv was built without MPI, but it was started by mpirun: install "
            "libopenmpi-dev and rebuild (make build) to train on several ranks");
#endif
}

bool Comm::all_failing([[maybe_unused]] double seconds) const {
  if (!distributed()) return true;
#ifdef QKV_HAVE_MPI
  MPI_Request req;
  if (MPI_Ibarrier(*static_cast<MPI_Comm*>(failure_comm_), &req) != MPI_SUCCESS) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (int done = 0;; usleep(1000)) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (done) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
  }
#endif
  return true;
}

void Comm::abort_job(int code) const {
#ifdef QKV_HAVE_MPI
  if (distributed()) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

Comm& Comm::world() {
  static Comm comm;
  return comm;
}

void Comm::sum([[maybe_unused]] std::vector<double>& values) const {
  if (!distributed()) return;
#ifdef QKV_HAVE_MPI
  Timed timed(comm_seconds_);
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM,
                          MPI_COMM_WORLD),
            "all-reduce");
#endif
}

double Comm::sum(double value) const {
  std::vector<double> v{value};
  sum(v);
  return v[0];
}

void Comm::sum_gradients(const std::vector<Tensor>& params) const {
  if (!distributed()) return;
  GradientBuckets(params, *this, 0).sum();
}

void Comm::broadcast([[maybe_unused]] std::string& bytes, [[maybe_unused]] int root) const {
  if (!distributed()) return;
#ifdef QKV_HAVE_MPI
  Timed timed(comm_seconds_);
  std::uint64_t n = bytes.size();
  check_mpi(MPI_Bcast(&n, 1, MPI_UINT64_T, root, MPI_COMM_WORLD), "broadcast");
  bytes.resize(n);
  // In pieces below 2 GiB: MPI counts are ints.
  for (std::uint64_t at = 0; at < n; at += std::uint64_t{1} << 30) {
    const auto len = static_cast<int>(std::min<std::uint64_t>(n - at, std::uint64_t{1} << 30));
    check_mpi(MPI_Bcast(bytes.data() + at, len, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }
#endif
}

void Comm::broadcast_values(const std::vector<Tensor>& tensors, int root) const {
  if (!distributed()) return;
  std::string bytes;
  for (const Tensor& t : tensors)
    bytes.append(static_cast<const char*>(t.raw_data()), static_cast<std::size_t>(t.numel()) * itemsize(t.dtype()));
  broadcast(bytes, root);
  std::size_t at = 0;
  for (const Tensor& t : tensors) {
    const auto n = static_cast<std::size_t>(t.numel()) * itemsize(t.dtype());
    QKV_CHECK(at + n <= bytes.size(), "broadcast: rank {} sent fewer values than this rank's parameters hold", root);
    std::memcpy(t.raw_data(), bytes.data() + at, n);
    t.bump_version();
    at += n;
  }
}

std::vector<std::uint64_t> Comm::gather(std::uint64_t value) const {
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size_), value);
#ifdef QKV_HAVE_MPI
  if (distributed()) {
    Timed timed(comm_seconds_);
    check_mpi(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "all-gather");
  }
#endif
  return all;
}

std::vector<std::string> Comm::gather_to_lead(const std::string& bytes) const {
  if (!distributed()) return {bytes};
  std::vector<std::string> out;
#ifdef QKV_HAVE_MPI
  Timed timed(comm_seconds_);
  QKV_CHECK(bytes.size() < (std::size_t{1} << 31), "gather: {} bytes from one rank is over MPI's 2 GiB", bytes.size());
  int n = static_cast<int>(bytes.size());
  std::vector<int> sizes(static_cast<std::size_t>(size_)), displs(static_cast<std::size_t>(size_));
  check_mpi(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "gather");
  std::int64_t total = 0;
  for (int r = 0; r < size_; ++r) {
    displs[static_cast<std::size_t>(r)] = static_cast<int>(total);
    total += sizes[static_cast<std::size_t>(r)];
  }
  QKV_CHECK(!lead() || total < (std::int64_t{1} << 31), "gather: {} bytes in all is over MPI's 2 GiB", total);
  std::string all(lead() ? static_cast<std::size_t>(total) : 0, '\0');
  check_mpi(MPI_Gatherv(bytes.data(), n, MPI_BYTE, all.data(), sizes.data(), displs.data(), MPI_BYTE, 0,
                        MPI_COMM_WORLD),
            "gather");
  if (lead())
    for (int r = 0; r < size_; ++r)
      out.push_back(all.substr(static_cast<std::size_t>(displs[static_cast<std::size_t>(r)]),
                               static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)])));
#endif
  return out;
}

std::int64_t Comm::max(std::int64_t value) const {
#ifdef QKV_HAVE_MPI
  if (distributed()) {
    Timed timed(comm_seconds_);
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), "all-reduce");
  }
#endif
  return value;
}

std::vector<std::string> Comm::hosts() const {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  std::vector<std::string> all(static_cast<std::size_t>(size_), name);
#ifdef QKV_HAVE_MPI
  if (distributed()) {
    std::vector<char> buf(static_cast<std::size_t>(size_) * sizeof(name));
    check_mpi(MPI_Allgather(name, sizeof(name), MPI_CHAR, buf.data(), sizeof(name), MPI_CHAR, MPI_COMM_WORLD),
              "all-gather");
    for (int r = 0; r < size_; ++r) all[static_cast<std::size_t>(r)] = std::string(buf.data() + r * sizeof(name));
  }
#endif
  return all;
}

double Comm::take_comm_seconds() const {
  const double s = comm_seconds_;
  comm_seconds_ = 0;
  return s;
}

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

double Shard::grad_norm() const {
  double sq = 0;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = params_[i].grad();
    if (!owns(i) || !g.defined()) continue;
    dispatch("optim.shard", g.dtype(), [&](auto tag) {
      const auto* pg = g.data<decltype(tag)>();
      for (std::int64_t j = 0; j < g.numel(); ++j) sq += double(pg[j]) * double(pg[j]);
    });
  }
  return std::sqrt(comm_.sum(sq));
}

double Shard::clip_grad_norm(double max_norm) const {
  const double norm = grad_norm();
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(params_, coef);  // only this rank's parameters hold gradients now
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


}  // namespace qkv
