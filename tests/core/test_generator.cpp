#include "../support.h"

using namespace qkv;

TEST_CASE("generator streams are fixed across platforms") {
  // These constants pin the stream: xoshiro256** seeded through splitmix64 with seed 42.
  Generator g(42);
  const std::uint64_t first = g.next_u64();
  Generator h(42);
  CHECK(h.next_u64() == first);
  Generator a(7), b(7);
  const Tensor x = Tensor::randn({1000}, a, kFloat64), y = Tensor::randn({1000}, b, kFloat64);
  CHECK(x.to_vector() == y.to_vector());
  double mean = 0, sq = 0;
  for (double v : x.to_vector()) mean += v, sq += v * v;
  mean /= 1000;
  CHECK(std::abs(mean) < 0.1);
  CHECK(std::abs(sq / 1000 - 1.0) < 0.15);
  const auto u = Tensor::rand({1000}, a, kFloat64).to_vector();
  for (double v : u) CHECK((v >= 0.0 && v < 1.0));
  // state round-trips
  Generator c(3);
  c.normal();
  const auto st = c.state();
  const double next = c.normal();
  c.set_state(st);
  CHECK(c.normal() == next);
}

TEST_CASE("generator golden values") {
  Generator g(0);
  // xoshiro256** reference for splitmix64(0) seeding; recomputing these by hand catches any drift.
  CHECK(g.next_u64() == 0x99ec5f36cb75f2b4ULL);
  CHECK(g.next_u64() == 0xbf6e1f784956452aULL);
}

TEST_CASE("NoInitGuard: randn and uniform draw nothing inside it, and nest") {
  Generator g(5);
  const auto before = g.state().s;
  {
    const NoInitGuard outer;
    {
      const NoInitGuard inner;
      CHECK(Tensor::randn({3, 4}, g).shape() == Shape{3, 4});
    }
    CHECK(NoInitGuard::active());
    CHECK(Tensor::uniform({5}, -1, 1, g).numel() == 5);
  }
  CHECK_FALSE(NoInitGuard::active());
  CHECK(g.state().s == before);
  Tensor::randn({2}, g);
  CHECK(g.state().s != before);
}
