// A custom op defined outside the library: swish(x) = x * sigmoid(x) with its own kernel and backward,
// gradchecked in float64, and what its misuse looks like. README's "Custom ops" block is the part between the
// readme markers (a test keeps them equal). Exits non-zero if anything is off.
#include <qkv/core/autograd.h>
#include <qkv/core/dispatch.h>
#include <qkv/core/gradcheck.h>
#include <qkv/core/ops.h>

#include <fmt/format.h>

#include <cmath>
#include <string>

using namespace qkv;

// [readme]
// swish(x) = x * sigmoid(x); d/dx = s + x * s * (1 - s) with s = sigmoid(x).
Tensor swish(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  Tensor s = Tensor::empty(x.shape(), x.dtype());
  dispatch("swish", x.dtype(), [&](auto tag) {     // one loop for float32 and float64
    using T = decltype(tag);
    const T* in = x.data<T>();
    T *o = out.data<T>(), *sig = s.data<T>();
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      sig[i] = T(1) / (T(1) + std::exp(-in[i]));
      o[i] = in[i] * sig[i];
    }
  });
  if (any_requires_grad({&x}))
    record(out, "swish", /*inputs=*/{x}, /*saved=*/{x, s},
           [](const Tensor& g, const std::vector<Tensor>& saved) -> Grads {
             const Tensor& x = saved[0];
             const Tensor& s = saved[1];
             return {g * (s + x * s * (1.0 - s))};  // one gradient per input, of its shape and dtype
           });
  return out;
}

bool swish_passes_gradcheck() {
  Generator gen(0);
  Tensor x = Tensor::randn({3, 4}, gen, kFloat64).requires_grad_();
  return gradcheck([](const std::vector<Tensor>& in) { return swish(in[0]); }, {x});
}
// [/readme]

namespace {

// A deliberately wrong backward: returns a gradient of the wrong shape.
Tensor bad_swish(const Tensor& x) {
  Tensor out = swish(x.detach());
  record(out, std::string("bad_") + "swish", {x}, {}, [](const Tensor& g, const std::vector<Tensor>&) -> Grads {
    return {sum(g)};
  });
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool expect(bool ok, const std::string& what) {
  fmt::print("{} {}\n", ok ? "ok  " : "FAIL", what);
  return ok;
}

}  // namespace

int main() {
  bool ok = expect(swish_passes_gradcheck(), "swish passes gradcheck in float64");

  Tensor x = Tensor::from({-1.0, 0.5, 2.0}).requires_grad_();
  sum(swish(x)).backward();
  const double s = 1.0 / (1.0 + std::exp(-2.0));
  ok &= expect(std::abs(x.grad().to_vector()[2] - (s + 2.0 * s * (1.0 - s))) < 1e-6, "float32 gradient value");

  // The node owns its name: the temporary string above is gone by the time backward reports it.
  const std::string shape_error = error_of([&] { sum(bad_swish(x)).backward(); });
  ok &= expect(shape_error.find("backward of `bad_swish`") != std::string::npos &&
                   shape_error.find("shape []") != std::string::npos,
               "a wrong-shape gradient names the op: " + shape_error);

  // A saved input written in place before backward: caught, not a silently wrong gradient.
  Tensor y = Tensor::from({1.0, 2.0}).requires_grad_();
  Tensor h = mul(y, 1.0);
  Tensor loss = sum(swish(h));
  h.fill_(0.0);
  const std::string version_error = error_of([&] { loss.backward(); });
  ok &= expect(version_error.find("backward of `swish`") != std::string::npos &&
                   version_error.find("modified by an in-place operation") != std::string::npos,
               "an in-place write to a saved tensor is caught: " + version_error);
  fmt::print("{}\n", ok ? "custom op ok" : "custom op FAILED");
  return ok ? 0 : 1;
}
