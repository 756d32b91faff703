#include "../../support.h"

#include <qkv/core/hash.h>
#include <qkv/train/dist/gradients.h>

#include <cstdlib>

using namespace qkv;

TEST_CASE("without mpirun the job is one rank and nothing calls MPI") {
  REQUIRE(!launched_by_mpirun());  // ctest does not run this binary under mpirun
  const Comm& comm = Comm::world();
  CHECK(comm.size() == 1);
  CHECK(comm.rank() == 0);
  CHECK(comm.lead());
  CHECK(!comm.distributed());
  CHECK(comm.sum(2.5) == 2.5);
  CHECK(comm.max(7) == 7);
  CHECK(comm.gather(42) == std::vector<std::uint64_t>{42});
  const Tensor w = Tensor::from({1.0, 2.0}).requires_grad_();
  sum(w * 3.0).backward();
  sum_gradients(comm, {w});
  CHECK(w.grad().to_vector() == std::vector<double>{3.0, 3.0});
}

TEST_CASE("on_every_rank_agree: a rank's own error comes back as itself") {
  const Comm& comm = Comm::world();
  int ran = 0;
  on_every_rank_agree(comm, [&] { ++ran; });
  CHECK(ran == 1);
  CHECK_ERROR(on_every_rank_agree(comm, [] { fail("no run directory"); }), "no run directory");
  CHECK_THROWS_AS(on_every_rank_agree(comm, [] { throw std::runtime_error("disk full"); }), std::runtime_error);
}

TEST_CASE("fnv1a is the standard 64-bit FNV-1a") {
  CHECK(fnv1a("", 0) == 14695981039346656037ull);
  CHECK(fnv1a("a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(fnv1a("foobar", 6) == 0x85944171f73967e8ull);
}

TEST_CASE("gradient buckets: last parameters first, split by size and dtype; in a job of one the sums are the gradients") {
  const Comm& comm = Comm::world();
  const Tensor a = Tensor::from({1.0, 2.0}, kFloat64).requires_grad_();         // 16 bytes
  const Tensor b = Tensor::from({1.0, 2.0, 3.0}).requires_grad_();              // 12 bytes
  const Tensor c = Tensor::from({4.0, 5.0, 6.0}).requires_grad_();              // 12 bytes
  const Tensor unused = Tensor::from({7.0}).requires_grad_();
  const std::vector<Tensor> params{a, b, c, unused};
  CHECK(GradientBuckets(params, comm, 0).size() == 2);   // one per dtype: {unused, c, b}, {a}
  CHECK(GradientBuckets(params, comm, 16).size() == 3);  // {unused, c} (16 bytes), {b}, {a}
  CHECK(GradientBuckets(params, comm, 28).size() == 2);  // {unused, c, b}, {a}
  CHECK(GradientBuckets(params, comm, 1).size() == 4);   // each alone, however small the cap

  GradientBuckets buckets(params, comm, 16);
  for (int sweep = 0; sweep < 2; ++sweep) {  // twice: the per-sweep state starts again
    for (const Tensor& p : params) p.zero_grad();
    buckets.backward(sum(b * c) + sum(a * 3.0).to(kFloat32));
    CHECK(a.grad().to_vector() == std::vector<double>{3, 3});
    CHECK(b.grad().to_vector() == std::vector<double>{4, 5, 6});
    CHECK(c.grad().to_vector() == std::vector<double>{1, 2, 3});
    CHECK(unused.grad().to_vector() == std::vector<double>{0});  // not reached: zeros, as the sum would be
  }
  CHECK(buckets.started_early() == 0);  // the first bucket holds `unused`, which backward never reaches

  // sum(): gradients a plain backward made (sum_gradients' path); undefined ones become zeros.
  for (const Tensor& p : params) p.zero_grad();
  sum(b * c).backward();
  buckets.sum();
  CHECK(b.grad().to_vector() == std::vector<double>{4, 5, 6});
  CHECK(a.grad().to_vector() == std::vector<double>{0, 0});
  CHECK(buckets.started_early() == 0);

  // Every parameter reached: each bucket starts as backward finishes its gradients, in bucket order.
  GradientBuckets reached({a, b, c}, comm, 1);
  reached.backward(sum(b * c) + sum(a * 3.0).to(kFloat32));
  CHECK(reached.started_early() == 3);
}
