#include "../support.h"

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
}

TEST_CASE("bad creation input") {
  CHECK_ERROR(Tensor::from(std::vector<float>{1, 2, 3}, {2, 2}), "3 values do not fill shape [2, 2]");
  CHECK_ERROR(Tensor::ones({2}).item(), "expected a tensor with one element, got shape [2]");
  CHECK_ERROR(Tensor::ones({2}).data<double>(), "has dtype float32, asked for float64");
  CHECK_ERROR(Tensor::ones({2}).size(3), "dim 3 is out of range for a tensor of rank 1");
  CHECK_ERROR(Tensor::zeros({2}, kInt64).requires_grad_(), "only floating tensors can require grad");
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
  { const Tensor small = Tensor::zeros({4}); }
  CHECK(cached_memory_bytes() == 0);
}
