#include "qkv/train/dist/comm.h"

#include <qkv/core/tensor.h>
#include <qkv/train/dist/detail.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <cstring>

#include <unistd.h>

namespace qkv {
namespace {

using dist_detail::Timed;
#ifdef QKV_HAVE_MPI
using dist_detail::check_mpi;

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

void report_failure_once(const Comm& comm, const std::string& message, int code, double seconds) {
  if (!comm.distributed()) {
    std::cerr << message;
    return;
  }
  if (!comm.all_failing(seconds)) {
    std::cerr << fmt::format("rank {}: {}", comm.rank(), message) << std::flush;
    comm.abort_job(code);
  }
  const auto failed = comm.gather(message.empty() ? 0 : 1);
  const auto first = std::find(failed.begin(), failed.end(), 1u) - failed.begin();
  if (first != comm.rank()) return;
  std::cerr << (comm.lead() ? message : fmt::format("rank {}: {}", comm.rank(), message));
}

double Comm::take_comm_seconds() const {
  const double s = comm_seconds_;
  comm_seconds_ = 0;
  return s;
}

}  // namespace qkv
