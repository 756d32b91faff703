#pragma once
// A seeded random generator whose streams are identical on every platform and compiler: xoshiro256** seeded
// through splitmix64, uniforms from the top 53 (or 24) bits, normals by Box-Muller. Nothing here uses
// <random>'s distributions, whose output differs between standard libraries.
#include <array>
#include <cstdint>

namespace qkv {

class Generator {
 public:
  /// The full state, for checkpoints: restoring it continues the exact same stream.
  struct State {
    std::array<std::uint64_t, 4> s{};
    double spare_normal = 0.0;
    bool has_spare = false;
  };

  explicit Generator(std::uint64_t seed = 0) { manual_seed(seed); }

  /// Restarts the stream from `seed`.
  void manual_seed(std::uint64_t seed);
  /// Next raw 64-bit value.
  std::uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Standard normal N(0, 1).
  double normal();
  /// Uniform integer in [0, n) (n > 0), without modulo bias.
  std::uint64_t randint(std::uint64_t n);
  /// Advances the stream past `n` draws of next_u64 (or uniform), as if they were made.
  void discard(std::uint64_t n) {
    for (std::uint64_t i = 0; i < n; ++i) next_u64();
  }

  State state() const { return state_; }
  void set_state(const State& s) { state_ = s; }

 private:
  State state_;
};

/// The process-wide generator used when none is passed (seed 0 until manual_seed is called).
Generator& default_generator();
/// Reseeds the default generator, like torch.manual_seed.
void manual_seed(std::uint64_t seed);

/// While alive on this thread, Tensor::randn and Tensor::uniform return uninitialised tensors and draw nothing
/// (Hugging Face's no_init_weights): for building a model whose weights a file is about to replace, so reading a
/// model costs the time and memory of reading it (pages never written are never resident). Nests.
class NoInitGuard {
 public:
  NoInitGuard();
  ~NoInitGuard();
  NoInitGuard(const NoInitGuard&) = delete;
  NoInitGuard& operator=(const NoInitGuard&) = delete;
  /// True inside a NoInitGuard on this thread.
  static bool active();

 private:
  bool prev_;
};

}  // namespace qkv
