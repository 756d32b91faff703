#include "../support.h"

#include <functional>
#include <limits>
#include <sstream>

using namespace qkv;

TEST_CASE("factories fill the right values") {
  CHECK(Tensor::zeros({2, 3}).to_vector() == std::vector<double>(6, 0.0));
  CHECK(Tensor::ones({4}, kFloat64).to_vector() == std::vector<double>(4, 1.0));
  CHECK(Tensor::full({2}, 2.5).to_vector() == std::vector<double>{2.5, 2.5});
  CHECK(Tensor::arange(5).to_vector() == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(Tensor::arange(1.0, 2.0, 0.25, kFloat64).to_vector() == std::vector<double>{1, 1.25, 1.5, 1.75});
  CHECK(Tensor::scalar(3.0).dim() == 0);
  CHECK(Tensor::scalar(3.0).item() == 3.0);
  const Tensor t = Tensor::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.size(-1) == 3);
  CHECK(t.dtype() == kFloat32);
  CHECK(t.to(kFloat64).dtype() == kFloat64);
  CHECK(t.to(kFloat64).to_vector() == t.to_vector());
  CHECK(t.to(kInt64).to_vector() == t.to_vector());
}

TEST_CASE("ranks 0 to 4 and beyond") {
  for (int r = 0; r <= 6; ++r) {
    Shape s;
    for (int d = 0; d < r; ++d) s.push_back(2);
    Tensor t = Tensor::ones(s);
    CHECK(t.dim() == r);
    CHECK(t.numel() == (1 << r));
  }
  Shape big;
  for (int d = 0; d < Shape::kMaxRank; ++d) big.push_back(1);
  CHECK_ERROR(big.push_back(1), "exceeds the maximum");
}

TEST_CASE("clone copies, detach shares") {
  Tensor a = Tensor::ones({3});
  Tensor c = a.clone();
  Tensor d = a.detach();
  a.fill_(2.0);
  CHECK(c.to_vector() == std::vector<double>{1, 1, 1});
  CHECK(d.to_vector() == std::vector<double>{2, 2, 2});
}

TEST_CASE("str renders like torch") {
  CHECK(Tensor::from(std::vector<double>{1, 2, 3, 4}, {2, 2}).str() ==
        "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]], dtype=float64)");
  CHECK(Tensor::arange(3).str() == "tensor([0.0000, 1.0000, 2.0000])");
  CHECK(Tensor::scalar(2.5).str() == "tensor(2.5000)");
  CHECK(Tensor::from(std::vector<std::int64_t>{1, 2, 3, 4}, {2, 1, 2}).str() ==
        "tensor([[[1, 2]],\n\n        [[3, 4]]], dtype=int64)");
  CHECK((Tensor::ones({1}).requires_grad_() * 2.0).str() == "tensor([2.0000], grad_fn=<mul_scalar>)");
  // Past 1000 elements, torch's summary: the first and last 3 of each long dim.
  CHECK(Tensor::arange(2000, kInt64).str() == "tensor([0, 1, 2, ..., 1997, 1998, 1999], dtype=int64)");
  CHECK(reshape(Tensor::arange(1600, kInt64), {40, 40}).str() ==
        "tensor([[0, 1, 2, ..., 37, 38, 39],\n        [40, 41, 42, ..., 77, 78, 79],\n        [80, 81, 82, ..., 117, "
        "118, 119],\n        ...,\n        [1480, 1481, 1482, ..., 1517, 1518, 1519],\n        [1520, 1521, 1522, ..., "
        "1557, 1558, 1559],\n        [1560, 1561, 1562, ..., 1597, 1598, 1599]], dtype=int64)");
  CHECK(Tensor::arange(1000, kInt64).str().find("...") == std::string::npos);  // 1000 is printed whole
  std::ostringstream os;
  os << Tensor::arange(2);
  CHECK(os.str() == "tensor([0.0000, 1.0000])");
}

TEST_CASE("bad creation input") {
  CHECK_ERROR(Tensor::from(std::vector<float>{1, 2, 3}, {2, 2}), "3 values do not fill shape [2, 2]");
  CHECK_ERROR(Tensor::ones({2}).item(), "expected a tensor with one element, got shape [2]");
  CHECK_ERROR(Tensor::ones({2}).data<double>(), "has dtype float32, asked for float64");
  CHECK_ERROR(Tensor::ones({2}).size(3), "dim 3 is out of range for a tensor of rank 1");
  CHECK_ERROR(Tensor::zeros({2}, kInt64).requires_grad_(), "only floating tensors can require grad");
}

// Element counts and byte sizes that overflow int64 were accepted with a wrapped count (0 bytes allocated, then
// reads past the end): each is refused naming the shape.
TEST_CASE("shapes whose element count or byte size overflows are refused") {
  CHECK_ERROR(Tensor::zeros({1LL << 62}), "shape [4611686018427387904] of float32 needs more than 2^63 bytes");
  CHECK_ERROR(Tensor::zeros({1LL << 31, 1LL << 31, 4}), "shape [2147483648, 2147483648, 4]: the element count overflows");
  CHECK_ERROR(Tensor::zeros({3037000500, 3037000500}), "shape [3037000500, 3037000500]: the element count overflows");
  CHECK_ERROR(reshape(Tensor::zeros({0}), {1LL << 31, 1LL << 31, 4}), "the element count overflows");
  CHECK(Shape({1LL << 31, 1LL << 31}).numel() == (1LL << 62));  // the largest products still count
  CHECK_ERROR(Tensor::scalar(1.0).shape().back(), "back() of a 0-d shape");
  Generator g(1);
  CHECK_ERROR(g.randint(0), "randint: the range [0, n) is empty");
  CHECK(g.randint(1) == 0);
}

TEST_CASE("large blocks are reused, not returned to the OS") {
  release_cached_memory();
  CHECK(cached_memory_bytes() == 0);
  const void* first = nullptr;
  {
    const Tensor big = Tensor::zeros({256, 256});  // 256 KiB
    first = big.raw_data();
  }
  CHECK(cached_memory_bytes() == 256 * 256 * 4);
  const Tensor again = Tensor::empty({256, 256});
  CHECK(again.raw_data() == first);
  CHECK(cached_memory_bytes() == 0);
  { const Tensor mid = Tensor::zeros({16, 64}); }  // 4 KiB: cached too (a tiny model's activations)
  CHECK(cached_memory_bytes() == 16 * 64 * 4);
  release_cached_memory();
  { const Tensor small = Tensor::zeros({4}); }  // below 4 KiB: malloc's own fast path
  CHECK(cached_memory_bytes() == 0);
}

TEST_CASE("an undefined tensor is a qkv::Error naming the op or method, never a signal") {
  const Tensor u, x = Tensor::ones({2, 3}), ids = Tensor::from(std::vector<std::int64_t>{0, 1}, {2});
  const std::vector<std::pair<const char*, std::function<void()>>> calls = {
      {"Tensor::dim", [&] { (void)u.dim(); }},
      {"Tensor::numel", [&] { (void)u.numel(); }},
      {"Tensor::size", [&] { (void)u.size(0); }},
      {"Tensor::shape", [&] { (void)u.shape(); }},
      {"Tensor::dtype", [&] { (void)u.dtype(); }},
      {"Tensor::to_vector", [&] { (void)u.to_vector(); }},
      {"Tensor::item", [&] { (void)u.item(); }},
      {"Tensor::data", [&] { (void)u.data<float>(); }},
      {"Tensor::fill_", [&] { u.fill_(1); }},
      {"Tensor::zero_", [&] { u.zero_(); }},
      {"Tensor::copy_", [&] { u.copy_(x); }},
      {"Tensor::copy_", [&] { x.copy_(u); }},
      {"Tensor::to", [&] { (void)u.to(kFloat64); }},
      {"Tensor::clone", [&] { (void)u.clone(); }},
      {"Tensor::requires_grad_", [&] { Tensor t; t.requires_grad_(); }},
      {"Tensor::grad", [&] { (void)u.grad(); }},
      {"Tensor::detach", [&] { (void)u.detach(); }},
      {"Tensor::backward", [&] { u.backward(); }},
      {"Tensor::numel", [&] { (void)Tensor::ones({2}).requires_grad_().grad().numel(); }},  // before any backward
      {"add", [&] { (void)add(u, x); }},
      {"add", [&] { (void)add(u, 1.0); }},
      {"sub", [&] { (void)sub(x, u); }},
      {"mul", [&] { (void)mul(u, 2.0); }},
      {"div", [&] { (void)div(x, u); }},
      {"neg", [&] { (void)neg(u); }},
      {"pow", [&] { (void)pow(u, 2.0); }},
      {"exp", [&] { (void)exp(u); }},
      {"log", [&] { (void)log(u); }},
      {"sqrt", [&] { (void)sqrt(u); }},
      {"tanh", [&] { (void)tanh(u); }},
      {"sigmoid", [&] { (void)sigmoid(u); }},
      {"relu", [&] { (void)relu(u); }},
      {"gelu", [&] { (void)gelu(u); }},
      {"sum_to", [&] { (void)sum_to(u, Shape{}); }},
      {"broadcast_to", [&] { (void)broadcast_to(u, Shape{2}); }},
      {"matmul", [&] { (void)matmul(u, x); }},
      {"linear", [&] { (void)linear(x, u); }},
      {"reshape", [&] { (void)reshape(u, {-1}); }},
      {"transpose", [&] { (void)transpose(u, 0, 1); }},
      {"permute", [&] { (void)permute(u, {1, 0}); }},
      {"concat", [&] { (void)concat({x, u}, 0); }},
      {"narrow", [&] { (void)narrow(u, 0, 0, 1); }},
      {"slice", [&] { (void)slice(u, 0, 0, 1); }},
      {"unsqueeze", [&] { (void)unsqueeze(u, 0); }},
      {"sum", [&] { (void)sum(u); }},
      {"sum", [&] { (void)sum(u, {0}); }},
      {"mean", [&] { (void)mean(u); }},
      {"mean", [&] { (void)mean(u, {0}); }},
      {"max", [&] { (void)max(u); }},
      {"max", [&] { (void)max(u, 0); }},
      {"argmax", [&] { (void)argmax(u, 0); }},
      {"softmax", [&] { (void)softmax(u, -1); }},
      {"log_softmax", [&] { (void)log_softmax(u, -1); }},
      {"cross_entropy", [&] { (void)cross_entropy(x, u); }},
      {"masked_fill", [&] { (void)masked_fill(x, u, 0.0); }},
      {"embedding", [&] { (void)embedding(u, ids); }},
      {"layer_norm", [&] { (void)layer_norm(x, u, Tensor::zeros({3})); }},  // an undefined bias is none (torch's None)
      {"attention", [&] { (void)attention(u, x, x, 1, false); }},
      {"attention_packed", [&] { (void)attention_packed(u, 1, 1, 1, false); }},
      {"attention_cached", [&] { (void)attention_cached(u, x, x, 0, 1, 1, 1); }},
      {"dropout", [&] { (void)dropout(u, 0.5, true); }},
      {"eq", [&] { (void)eq(x, u); }},
      {"lt", [&] { (void)lt(u, 0.0); }},
      {"where", [&] { (void)where(x, u, x); }},
      {"all", [&] { (void)all(u); }},
      {"any", [&] { (void)any(u, 0); }},
      {"gather", [&] { (void)gather(x, 0, u); }},
      {"index_select", [&] { (void)index_select(u, 0, ids); }},
      {"flip", [&] { (void)flip(u, {0}); }},
      {"stack", [&] { (void)stack({x, u}); }},
      {"sin", [&] { (void)sin(u); }},
      {"cos", [&] { (void)cos(u); }},
      {"abs", [&] { (void)abs(u); }},
      {"sign", [&] { (void)sign(u); }},
      {"rsqrt", [&] { (void)rsqrt(u); }},
      {"erf", [&] { (void)erf(u); }},
      {"log1p", [&] { (void)log1p(u); }},
      {"silu", [&] { (void)silu(u); }},
      {"clamp", [&] { (void)clamp(u, 0.0); }},
      {"maximum", [&] { (void)maximum(x, u); }},
      {"minimum", [&] { (void)minimum(u, x); }},
      {"min", [&] { (void)min(u); }},
      {"min", [&] { (void)min(u, 0); }},
      {"var", [&] { (void)var(u); }},
      {"std", [&] { (void)qkv::std(u, {0}); }},
      {"logsumexp", [&] { (void)logsumexp(u, 0); }},
      {"cumsum", [&] { (void)cumsum(u, 0); }},
      {"norm", [&] { (void)norm(u); }},
      {"tril", [&] { (void)tril(u); }},
      {"triu", [&] { (void)triu(u, 1); }},
      {"einsum", [&] { (void)einsum("ij,jk->ik", x, u); }},
      {"sort", [&] { (void)sort(u); }},
      {"topk", [&] { (void)topk(u, 1); }},
      {"multinomial", [&] { (void)multinomial(u, 1); }},
      {"Tensor::register_hook", [&] { (void)u.register_hook([](const Tensor& g) { return g; }); }},
      {"Tensor::retain_grad", [&] { u.retain_grad(); }},
      {"Tensor::version", [&] { (void)u.version(); }},
      {"Tensor::bump_version", [&] { u.bump_version(); }},
  };
  for (const auto& name_call : calls) {
    const auto& name = name_call.first;
    const auto& call = name_call.second;
    INFO(name);
    CHECK_ERROR(call(), std::string(name) + ":");
  }
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QKV_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define QKV_TEST_ASAN 1
#endif

TEST_CASE("the new ops' misuse: ranges, shapes and dtypes named, never a crash") {
  const Tensor x = Tensor::ones({2, 3});
  const std::vector<std::pair<std::string, std::function<void()>>> calls = {
      {"multinomial: row 0: weight -1 at 0 is negative or not finite", [] { (void)multinomial(Tensor::from({-1.0, 1.0}), 1); }},
      {"multinomial: row 0 has 0 categories of positive weight", [] { (void)multinomial(Tensor::zeros({3}), 1, true); }},
      {"multinomial: expected probabilities (N) or (B, N), got shape [1, 1, 2]",
       [] { (void)multinomial(Tensor::ones({1, 1, 2}), 1); }},
      {"multinomial: num_samples must be positive, got 0", [] { (void)multinomial(Tensor::ones({2}), 0); }},
      {"topk: k = 4 is out of range for dim 1 of size 3", [&] { (void)topk(x, 4); }},
      {"topk: k = -1 is out of range", [&] { (void)topk(x, -1); }},
      {"randint: expected low < high, got low = 5 and high = 2", [] { (void)randint(5, 2, {3}); }},
      {"tril: expected a tensor of at least 2 dims, got shape [3]", [] { (void)tril(Tensor::ones({3})); }},
      {"einsum: expected two operands and an explicit output", [&] { (void)einsum("ij->j", x, x); }},
      {"einsum: subscript 'j' is 3 in operand 0 (shape [2, 3]) but 2 in operand 1", [&] { (void)einsum("ij,jk->ik", x, x); }},
      {"clamp: min = 1 is greater than max = 0", [&] { (void)clamp(x, 1.0, 0.0); }},
      {"norm: p must be a finite number >= 1, got inf", [&] { (void)norm(x, std::numeric_limits<double>::infinity()); }},
      {"cumsum: dim 3 is out of range", [&] { (void)cumsum(x, 3); }},
      {"sin: expected a float32 or float64 tensor, got int64", [] { (void)sin(Tensor::zeros({2}, kInt64)); }},
      {"maximum: mixed dtypes", [&] { (void)maximum(x, Tensor::ones({2, 3}, kFloat64)); }},
      {"var: correction must be >= 0, got -2", [&] { (void)var(x, -2); }},
  };
  for (const auto& text_call : calls) {
    const auto& text = text_call.first;
    const auto& call = text_call.second;
    INFO(text);
    CHECK_ERROR(call(), text);
  }
}

TEST_CASE("out of memory names the op that asked and the bytes, as a std::bad_alloc") {
#ifdef QKV_TEST_ASAN
  MESSAGE("skipped: AddressSanitizer's allocator aborts where malloc returns null");
#else
  const Tensor one = Tensor::ones({1});
  const std::int64_t big = std::int64_t{1} << 30;  // (2^30)^2 float32 = 2^62 bytes: no address space holds it
  const auto message = [](const auto& f) -> std::string {
    try {
      f();
    } catch (const OutOfMemoryError& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(message([&] { broadcast_to(one, {big, big}); }) ==
        "out of memory: `broadcast_to` asked for 4611686018427387904 bytes (4611686018.4 GB)");
  CHECK(message([&] { Tensor::zeros({big, big}); }) ==
        "out of memory: a new tensor asked for 4611686018427387904 bytes (4611686018.4 GB)");
  CHECK_THROWS_AS(Tensor::zeros({big, big}), std::bad_alloc);  // what callers already catch
  CHECK(Tensor::ones({2}).numel() == 2);  // and the next allocation works
#endif
}
