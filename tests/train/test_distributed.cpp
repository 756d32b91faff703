#include "../support.h"

#include <qkv/train/distributed.h>

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
  comm.sum_gradients({w});
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
