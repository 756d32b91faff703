#pragma once
// Private to train/dist (not installed): the timer every collective runs under, and MPI's error check.
#include <qkv/core/errors.h>

#include <chrono>
#include <string>

#ifdef QKV_HAVE_MPI
#include <mpi.h>
#endif

namespace qkv::dist_detail {

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
inline void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("MPI: {} failed: {}", what, std::string(text, static_cast<std::size_t>(len)));
}
#endif

}  // namespace qkv::dist_detail
