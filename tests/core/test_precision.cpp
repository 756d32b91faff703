#include "../support.h"

#include <qkv/core/parallel.h>
#include <qkv/core/precision.h>

#include "../../core/ops/kernel.h"  // private to core: the strided product itself

#include <bit>
#include <chrono>
#include <thread>
#include <cmath>
#include <limits>

using namespace qkv;

namespace {

// A float32 tensor with every value rounded to bf16.
Tensor rounded(const Tensor& x) {
  Tensor r = x.clone();
  round_bf16(r.data<float>(), r.data<float>(), r.numel());
  return r;
}

Tensor randn32(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  return Tensor::randn(s, g, kFloat32);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  const Tensor x = a, y = b;
  return std::memcmp(x.raw_data(), y.raw_data(), static_cast<std::size_t>(x.numel()) * sizeof(float)) == 0;
}

// Runs f for each engine this machine has, forced.
template <class F>
void for_each_engine(F&& f) {
  std::vector<Bf16Engine> engines{Bf16Engine::Emulated};
  if (bf16_native()) engines.push_back(Bf16Engine::OneDnn);
  for (const Bf16Engine e : engines) {
    INFO("engine ", bf16_engine_name(e));
    set_bf16_engine(e);
    f(e);
  }
  reset_bf16_engine();
}

}  // namespace

TEST_CASE("round_bf16: nearest, ties to even, NaN, infinity and overflow") {
  CHECK(round_bf16(1.0f) == 1.0f);
  CHECK(round_bf16(1.0f + 0x1p-8f) == 1.0f);                   // halfway: ties to even (1.0)
  CHECK(round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f);     // halfway: ties to even (odd below)
  CHECK(round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);  // above halfway: up
  CHECK(round_bf16(-2.7182817f) == -2.71875f);
  CHECK(round_bf16(3.3895314e38f) == 3.3895314e38f);  // bf16's max
  CHECK(round_bf16(3.4e38f) == std::numeric_limits<float>::infinity());  // beyond bf16's max
  CHECK(std::isinf(round_bf16(-std::numeric_limits<float>::infinity())));
  CHECK(std::isnan(round_bf16(std::numeric_limits<float>::quiet_NaN())));
  // NaNs that plain rounding would turn into other numbers: a signalling NaN (its payload in the low bits rounds
  // away: infinity), the largest payload (the carry wraps to -0), and negative ones. Each stays a quiet NaN of
  // its sign, in the scalar and the array rounding alike.
  const auto bf16_bits = [](std::uint32_t in) { return std::bit_cast<std::uint32_t>(round_bf16(std::bit_cast<float>(in))) >> 16; };
  CHECK(bf16_bits(0x7f800001u) == 0x7fc0u);
  CHECK(bf16_bits(0x7fffffffu) == 0x7fffu);
  CHECK(bf16_bits(0xff800001u) == 0xffc0u);
  CHECK(bf16_bits(0xffffffffu) == 0xffffu);
  const std::vector<float> odd = {std::bit_cast<float>(0x7f800001u), std::bit_cast<float>(0x7fffffffu),
                                  std::bit_cast<float>(0xffffffffu), 1.0f + 0x1p-8f};
  std::vector<float> rounded(odd.size());
  round_bf16(odd.data(), rounded.data(), static_cast<std::int64_t>(odd.size()));
  for (std::size_t i = 0; i < odd.size(); ++i)
    CHECK(std::bit_cast<std::uint32_t>(rounded[i]) == std::bit_cast<std::uint32_t>(round_bf16(odd[i])));
  CHECK((std::bit_cast<std::uint32_t>(round_bf16(0.1f)) & 0xffffu) == 0);
}

TEST_CASE("precision names, the guard and bad input") {
  CHECK(parse_precision("bf16") == Precision::BFloat16);
  CHECK(std::string(precision_name(parse_precision("fp32"))) == "fp32");
  CHECK_ERROR(parse_precision("fp16"), "precision: expected fp32 or bf16, got 'fp16'");
  CHECK(matmul_precision() == Precision::Float32);
  {
    AutocastGuard bf16;
    CHECK(matmul_precision() == Precision::BFloat16);
    {
      AutocastGuard fp32(Precision::Float32);
      CHECK(matmul_precision() == Precision::Float32);
    }
    CHECK(matmul_precision() == Precision::BFloat16);
  }
  CHECK(matmul_precision() == Precision::Float32);
  if (!bf16_native()) CHECK_ERROR(set_bf16_engine(Bf16Engine::OneDnn), "QKV_BF16=onednn");
  CHECK(bf16_summary().rfind("bf16: ", 0) == 0);
}

TEST_CASE("bf16 products equal float32 products of bf16-rounded inputs, per engine (matmul, linear, einsum)") {
  // 96 x 256 x 160: large enough for oneDNN (>= 2^18 multiply-adds) and for a split across threads.
  const Tensor a = randn32({96, 256}, 1), b = randn32({256, 160}, 2), w = randn32({160, 256}, 3);
  const Tensor ra = rounded(a), rb = rounded(b), rw = rounded(w);
  const Tensor want = matmul(ra, rb), want_lin = linear(ra, rw), want_ein = einsum("ij,jk->ik", ra, rb);
  CHECK(!same_bits(matmul(a, b), want));  // the rounding is visible in float32
  for_each_engine([&](Bf16Engine e) {
    AutocastGuard bf16;
    const Tensor got = matmul(a, b), got_lin = linear(a, w), got_ein = einsum("ij,jk->ik", a, b);
    if (e == Bf16Engine::Emulated) {  // the same float32 engine on the same values: the same bits
      CHECK(same_bits(got, want));
      CHECK(same_bits(got_lin, want_lin));
    } else {  // oneDNN sums the same exact products in another order
      CHECK_CLOSE(got.to(kFloat64), want.to(kFloat64), 1e-5, 1e-4);
      CHECK_CLOSE(got_lin.to(kFloat64), want_lin.to(kFloat64), 1e-5, 1e-4);
    }
    CHECK_CLOSE(got_ein.to(kFloat64), want_ein.to(kFloat64), 1e-5, 1e-4);
    CHECK_CLOSE(got.to(kFloat64), matmul(a, b).to(kFloat64), 0, 0);  // deterministic
  });
}

TEST_CASE("bf16 backward: products at the forward's precision, even when backward runs outside the guard") {
  // Odd sizes: dw = g^T x rounds g into transposed tiles with partial edges.
  const Tensor x = randn32({83, 197}, 4).requires_grad_(), w = randn32({131, 197}, 5).requires_grad_();
  const Tensor g = randn32({83, 131}, 6);
  Tensor y;
  {
    AutocastGuard bf16;
    y = linear(x, w);
  }
  y.backward(g);
  // dx = g w and dw = g^T x, each from bf16-rounded operands
  const Tensor dx = matmul(rounded(g), rounded(w)), dw = matmul(transpose(rounded(g), 0, 1), rounded(x.detach()));
  CHECK_CLOSE(x.grad().to(kFloat64), dx.to(kFloat64), 1e-5, 1e-4);
  CHECK_CLOSE(w.grad().to(kFloat64), dw.to(kFloat64), 1e-5, 1e-4);
  CHECK(x.grad().dtype() == kFloat32);  // gradients stay float32
}

TEST_CASE("bf16 attention: the products take rounded inputs; float64 is never rounded") {
  const Tensor q = randn32({2, 40, 32}, 7), k = randn32({2, 40, 32}, 8), v = randn32({2, 40, 32}, 9);
  const Tensor f32 = attention(q, k, v, 2, true, {}, false).first;
  Tensor b16;
  {
    AutocastGuard bf16;
    b16 = attention(q, k, v, 2, true, {}, false).first;
    const Tensor q64 = q.to(kFloat64);
    CHECK(same_bits(matmul(q64, transpose(q64, 1, 2)).to(kFloat32),
                    [&] { AutocastGuard fp32(Precision::Float32); return matmul(q64, transpose(q64, 1, 2)).to(kFloat32); }()));
  }
  CHECK(!same_bits(b16, f32));
  CHECK_CLOSE(b16.to(kFloat64), f32.to(kFloat64), 2e-2, 2e-2);  // bf16 has 8 significant bits
  // With inputs that are already bf16 values only the probabilities' rounding is left.
  Tensor exact;
  {
    AutocastGuard bf16;
    exact = attention(rounded(q), rounded(k), rounded(v), 2, true, {}, false).first;
  }
  CHECK_CLOSE(exact.to(kFloat64), attention(rounded(q), rounded(k), rounded(v), 2, true, {}, false).first.to(kFloat64),
              1e-2, 1e-2);
}

TEST_CASE("bf16 products are bit-identical for any thread count, per engine") {
  const Tensor a = randn32({389, 211}, 10), b = randn32({211, 157}, 11);
  const int before = num_threads();
  for_each_engine([&](Bf16Engine) {
    AutocastGuard bf16;
    set_num_threads(1);
    const Tensor one = matmul(a, b), one_t = matmul(transpose(b, 0, 1), transpose(a, 0, 1));
    for (const int t : {2, 3, 5, 8}) {
      INFO("threads ", t);
      set_num_threads(t);
      CHECK(same_bits(matmul(a, b), one));
      CHECK(same_bits(matmul(transpose(b, 0, 1), transpose(a, 0, 1)), one_t));
    }
  });
  set_num_threads(before);
}

TEST_CASE("bf16 attention on several threads: the pool's workers run at the caller's precision") {
  // Large enough (2 x 2 heads x 128^2 x 32) for its heads to be split across threads.
  const Tensor q = randn32({2, 128, 64}, 21), k = randn32({2, 128, 64}, 22), v = randn32({2, 128, 64}, 23);
  const int before = num_threads();
  AutocastGuard bf16;
  set_num_threads(1);
  const Tensor one = attention(q, k, v, 2, true, {}, false).first;
  set_num_threads(2);
  const Tensor two = attention(q, k, v, 2, true, {}, false).first;
  set_num_threads(before);
  CHECK(same_bits(two, one));
}

TEST_CASE("bf16 strided products (attention's blocks): exactly float32 products of both inputs rounded") {
  const Tensor a = randn32({24, 40}, 31), b = randn32({40, 16}, 32);
  Tensor got = Tensor::zeros({24, 16}), want = Tensor::zeros({24, 16});
  const Tensor ra = rounded(a), rb = rounded(b);
  {
    AutocastGuard bf16;
    kernel::gemm_strided(a.data<float>(), 40, false, b.data<float>(), 16, false, got.data<float>(), 16, 24, 40, 16, false);
  }
  kernel::gemm_strided(ra.data<float>(), 40, false, rb.data<float>(), 16, false, want.data<float>(), 16, 24, 40, 16, false);
  CHECK(same_bits(got, want));
  Tensor unrounded_b = Tensor::zeros({24, 16});
  kernel::gemm_strided(ra.data<float>(), 40, false, b.data<float>(), 16, false, unrounded_b.data<float>(), 16, 24, 40, 16, false);
  CHECK(!same_bits(got, unrounded_b));  // B's rounding shows
}

TEST_CASE("the pool's workers run a loop at the precision of the thread that started it") {
  const int before = num_threads();
  set_num_threads(2);
  constexpr int kChunks = 16;
  std::vector<Precision> seen(kChunks, Precision::Float32);
  std::vector<std::thread::id> who(kChunks);
  {
    AutocastGuard bf16;
    parallel_for(kChunks, true, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t i = lo; i < hi; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // long enough that the worker takes some
        seen[static_cast<std::size_t>(i)] = matmul_precision();
        who[static_cast<std::size_t>(i)] = std::this_thread::get_id();
      }
    });
  }
  set_num_threads(before);
  CHECK(std::count(seen.begin(), seen.end(), Precision::BFloat16) == kChunks);
  CHECK(std::count(who.begin(), who.end(), std::this_thread::get_id()) < kChunks);  // a worker did run some
}
