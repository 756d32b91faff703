#include "../support.h"

#include <qkv/core/dispatch.h>
#include <qkv/core/parallel.h>

using namespace qkv;

namespace {
// A custom op's kernel written once for both float types, as core/dispatch.h shows.
Tensor doubled(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  dispatch("doubled", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (std::int64_t i = 0; i < x.numel(); ++i) out.data<T>()[i] = T(2) * x.data<T>()[i];
  });
  return out;
}
}  // namespace

TEST_CASE("dispatch calls the lambda with the dtype's C++ type, and names the op for a dtype it does not take") {
  CHECK(doubled(Tensor::from({1.5, -2.0}, kFloat32)).to_vector() == std::vector<double>{3.0, -4.0});
  CHECK(doubled(Tensor::from({1.5, -2.0}, kFloat64)).to_vector() == std::vector<double>{3.0, -4.0});
  const Tensor ids = Tensor::from(std::vector<std::int64_t>{1, 2}, {2});
  CHECK_ERROR(doubled(ids), "doubled: expected a float32 or float64 tensor, got int64");
  CHECK(dispatch<Dtypes::Any>("size", ids.dtype(), [](auto tag) { return sizeof(tag); }) == 8);
  CHECK(dispatch<Dtypes::Any>("size", kFloat32, [](auto tag) { return sizeof(tag); }) == 4);
}

TEST_CASE("parallel_worth: one rule, a break-even size per kind of work") {
  CHECK_FALSE(parallel_worth(Work::Elementwise, 1000));
  CHECK(parallel_worth(Work::Elementwise, 1 << 15));
  CHECK_FALSE(parallel_worth(Work::Rows, (1 << 13) - 1));
  CHECK(parallel_worth(Work::Rows, 1 << 13));
  CHECK_FALSE(parallel_worth(Work::Gemm, 64.0 * 64 * 64));  // a 64^3 product: ~5 us, not worth a parallel region
  CHECK(parallel_worth(Work::Gemm, 256.0 * 256 * 256));
  CHECK_FALSE(parallel_worth(Work::Attention, 1 << 18));
  CHECK(parallel_worth(Work::Attention, (1 << 18) + 1));
}
