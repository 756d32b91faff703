#pragma once
// Data parallelism on MPI: `mpirun -np N qkv train CONFIG` runs N ranks that each take 1/N of every global
// batch and sum their gradients with MPI all-reduce, so N ranks follow the 1-process run. Without mpirun (or in a
// build without MPI) the job is one rank and nothing here calls MPI: it is never even initialised.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace qkv {

class Tensor;

/// Thrown on the ranks that did not fail when another rank's failure ends the job: the failing rank prints
/// the message, these stay silent (the CLI exits with `code`).
class PeerFailed : public std::runtime_error {
 public:
  explicit PeerFailed(int code) : std::runtime_error("another rank failed"), code(code) {}
  int code;
};

/// The ranks of this job (MPI_COMM_WORLD), or a job of one.
class Comm {
 public:
  /// The job's communicator; under mpirun, the first call initialises MPI (and registers its finalisation).
  static Comm& world();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool distributed() const { return size_ > 1; }
  bool lead() const { return rank_ == 0; }

  /// Sums every rank's values in place (float32 or float64 tensors, contiguous spans of doubles).
  void sum(std::vector<double>& values) const;
  double sum(double value) const;
  /// Root's bytes on every rank (resized there).
  void broadcast(std::string& bytes, int root = 0) const;
  /// Root's parameter values copied into every rank's parameters.
  void broadcast_values(const std::vector<Tensor>& tensors, int root = 0) const;
  /// Every rank's value, in rank order.
  std::vector<std::uint64_t> gather(std::uint64_t value) const;
  /// Every rank's bytes on rank 0, in rank order (empty on the other ranks).
  std::vector<std::string> gather_to_lead(const std::string& bytes) const;
  /// The largest of every rank's value.
  std::int64_t max(std::int64_t value) const;
  /// Every rank's host name, in rank order.
  std::vector<std::string> hosts() const;
  /// Seconds spent inside collectives since the last call (bench's communication share).
  double take_comm_seconds() const;
  /// For a failing rank: true when every rank reaches this call within `seconds` (they all failed at the same
  /// point and can agree on one message), false when some rank is elsewhere (it would wait forever in a
  /// collective). Uses a communicator of its own, so it never matches a collective another rank is in.
  bool all_failing(double seconds) const;
  /// Ends the whole job now with `code` (MPI_Abort): for a rank that failed alone.
  [[noreturn]] void abort_job(int code) const;

  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

 private:
  friend class Shard;  // their collectives count into comm_seconds_ too
  friend class GradientBuckets;
  Comm();
  int rank_ = 0, size_ = 1;
  mutable double comm_seconds_ = 0;
  void* failure_comm_ = nullptr;  // an MPI_Comm of its own for all_failing (a void* keeps mpi.h out of this header)
};

/// True when this process was started by mpirun/mpiexec (OpenMPI's OMPI_COMM_WORLD_SIZE, or PMI/PMIx variables).
bool launched_by_mpirun();

/// Runs `f` on every rank; if it throws on any rank, every rank throws: the failing ranks their own error, the
/// others PeerFailed with the failing rank's exit code (2 for qkv::Error, 1 otherwise). For steps one rank may
/// fail alone (rank 0 creating the run directory), so no rank is left waiting in a collective.
template <class F>
void on_every_rank_agree(const Comm& comm, F&& f);

}  // namespace qkv

#include <qkv/core/errors.h>

#include <exception>
#include <filesystem>

namespace qkv {

/// The exit status a failure gives (README, "Exit status"): 2 for user mistakes (qkv::Error, a filesystem error
/// on an input path), 1 for failures while running (a write that failed, out of memory, anything else).
inline int failure_code(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const PeerFailed& e) {
    return e.code;
  } catch (const WriteError&) {
    return 1;
  } catch (const Error&) {
    return 2;
  } catch (const std::filesystem::filesystem_error&) {
    return 2;
  } catch (...) {
    return 1;
  }
}

/// Prints a failure's `message` once per job: on one process, always; under mpirun, by the lowest rank that failed
/// itself (a failure every rank meets alike, a config error, is printed by rank 0 alone; ranks that only learned
/// of another's failure, with an empty message, print nothing). A rank that failed alone (a file its machine
/// cannot read, a bad QKV_GEMM in its environment) would leave the others waiting forever in their next
/// collective: when the others do not arrive within `seconds`, it prints "rank N: message" and ends the job with
/// `code` (MPI_Abort). Every rank must call it when it fails.
void report_failure_once(const Comm& comm, const std::string& message, int code, double seconds);

template <class F>
void on_every_rank_agree(const Comm& comm, F&& f) {
  std::exception_ptr error;
  std::int64_t code = 0;
  try {
    f();
  } catch (...) {
    error = std::current_exception();
    code = failure_code(error);
  }
  const std::int64_t worst = comm.distributed() ? comm.max(code) : code;
  if (error) std::rethrow_exception(error);
  if (worst != 0) throw PeerFailed(static_cast<int>(worst));
}

}  // namespace qkv
