#include "qkv/core/generator.h"

#include "qkv/core/errors.h"

#include <cmath>
#include <numbers>

namespace qkv {
namespace {
std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Generator::manual_seed(std::uint64_t seed) {
  state_ = State{};
  for (auto& w : state_.s) w = splitmix64(seed);
}

std::uint64_t Generator::next_u64() {
  auto& s = state_.s;
  const std::uint64_t result = rotl(s[1] * 5, 7) * 9;
  const std::uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  if (state_.has_spare) {
    state_.has_spare = false;
    return state_.spare_normal;
  }
  // Box-Muller with u1 in (0, 1] so log(u1) is finite.
  const double u1 = 1.0 - uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double theta = 2.0 * std::numbers::pi * u2;
  state_.spare_normal = r * std::sin(theta);
  state_.has_spare = true;
  return r * std::cos(theta);
}

std::uint64_t Generator::randint(std::uint64_t n) {
  QKV_CHECK(n > 0, "randint: the range [0, n) is empty (n = 0)");
  // Rejection sampling: draw from the largest multiple of n below 2^64.
  const std::uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  std::uint64_t x;
  do x = next_u64();
  while (x >= limit);
  return x % n;
}

Generator& default_generator() {
  static Generator g(0);
  return g;
}

void manual_seed(std::uint64_t seed) { default_generator().manual_seed(seed); }

namespace {
thread_local bool t_no_init = false;
}  // namespace

NoInitGuard::NoInitGuard() : prev_(t_no_init) { t_no_init = true; }
NoInitGuard::~NoInitGuard() { t_no_init = prev_; }
bool NoInitGuard::active() { return t_no_init; }

}  // namespace qkv
