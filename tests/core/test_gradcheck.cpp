#include "../support.h"

#include <qkv/core/autograd.h>
#include <qkv/core/gradcheck.h>

using namespace qkv;
using Ins = const std::vector<Tensor>&;

namespace {
// x^2 with a deliberately wrong backward (x instead of 2x).
Tensor bad_square(const Tensor& x) {
  Tensor out;
  {
    NoGradGuard g;
    out = x * x;
  }
  if (any_requires_grad({&x}))
    record(out, "bad_square", {&x}, [x = x.detach()](const Tensor& g) -> Grads { return {g * x}; });
  return out;
}
}  // namespace

TEST_CASE("gradcheck accepts a right gradient and reports a wrong one") {
  const Tensor x = test::leaf({3}, 1);
  CHECK(gradcheck([](Ins xs) { return xs[0] * xs[0]; }, {x}));
  const std::string err = gradcheck_error([](Ins xs) { return bad_square(xs[0]); }, {x});
  CHECK(err.find("input 0 (shape [3]), output element 0, input element 0") != std::string::npos);
}

TEST_CASE("gradcheck needs float64") {
  const Tensor x = Tensor::ones({2}).requires_grad_();
  CHECK_ERROR(gradcheck([](Ins xs) { return xs[0]; }, {x}), "input 0 requires grad but is float32");
}
