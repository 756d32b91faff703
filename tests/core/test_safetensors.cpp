#include "../support.h"

#include <qkv/core/safetensors.h>

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace qkv;

namespace {
// A file with a hand-written header and `data_bytes` bytes of buffer.
std::string raw(const std::string& header, std::size_t data_bytes = 0, std::uint64_t claimed = 0) {
  std::string out(8, '\0');
  const std::uint64_t n = claimed != 0 ? claimed : header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\0');
}
SafetensorsFile parse(const std::string& bytes) {
  return parse_safetensors({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, "test.safetensors");
}
}  // namespace

TEST_CASE("round trip: names, shapes, values, metadata, float64 and int64") {
  const Tensor a = Tensor::randn({3, 4}), b = Tensor::from({1.5, -2.0}, kFloat64);
  const Tensor c = Tensor::from(std::vector<std::int64_t>{7, -1, 3}, {3});
  const std::string path = test::temp_file("round.safetensors");
  write_safetensors(path, {{"a", a}, {"b", b}, {"c", c}}, {{"format", "qkv"}});
  const auto f = read_safetensors(path);
  CHECK(f.metadata.at("format") == "qkv");
  REQUIRE(f.tensors.size() == 3);
  CHECK(f.tensors[0].first == "a");
  CHECK(f.find("a").to_vector() == a.to_vector());
  CHECK(f.find("b").dtype() == kFloat64);
  CHECK(f.find("b").to_vector() == b.to_vector());
  CHECK(f.find("c").to_vector() == c.to_vector());
  // The layout: 8-byte length, JSON padded to 8, then the buffer.
  std::ifstream in(path, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
  CHECK(std::filesystem::file_size(path) == 8 + n + 12 * 4 + 2 * 8 + 3 * 8);
}

// The boundaries of the header and the layout: the largest header length allowed, one more, one past the end;
// padding of at most 7 spaces; duplicate names refused when writing too; bfloat16 ties round to even.
TEST_CASE("header lengths, padding and names at their boundaries; bf16 ties to even") {
  CHECK_ERROR(parse(raw("{}", 0, 100'000'001)), "header length 100000001 exceeds the limit of 100000000 bytes");
  CHECK_ERROR(parse(raw("{}   ", 0, 100'000'000)), "header length 100000000 is larger than the file's remaining 5");
  CHECK_ERROR(parse(raw("{}", 0, 3)), "header length 3 is larger than the file's remaining 2 bytes");
  CHECK(parse(raw("{}", 0, 2)).tensors.empty());
  for (const char* name : {"a", "ab", "abc", "abcdefgh"}) {
    const std::string bytes = to_safetensors_bytes({{name, Tensor::ones({1})}}, {});
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    const std::string header = bytes.substr(8, n);
    CHECK(header.size() - (header.find_last_not_of(' ') + 1) < 8);  // never a whole 8 spaces of padding
  }
  CHECK_ERROR(to_safetensors_bytes({{"a", Tensor::ones({1})}, {"a", Tensor::ones({2})}}, {}),
              "safetensors: duplicate tensor name 'a'");
  // 1 + 2^-8 lies halfway between two bfloat16 values (1 and 1 + 2^-7): to even, 1; 1 + 3 * 2^-8 to 1 + 2^-6.
  const auto bf = parse(to_safetensors_bytes({{"x", Tensor::from({1.0 + 1.0 / 256, 1.0 + 3.0 / 256})}}, {},
                                             StorageType::BF16)).find("x").to_vector();
  CHECK(bf[0] == 1.0);
  CHECK(bf[1] == 1.0 + 4.0 / 256);
}

TEST_CASE("f16 and bf16 storage round to nearest and read back as float32") {
  const Tensor x = Tensor::from({1.0, -2.5, 0.1, 65504.0, 1e-7, 65519.0, 3.14159});
  const auto f16 = parse(to_safetensors_bytes({{"x", x}}, {}, StorageType::F16)).find("x").to_vector();
  CHECK(f16[0] == 1.0);
  CHECK(f16[1] == -2.5);
  CHECK(f16[2] == doctest::Approx(0.0999755859375));  // nearest half to 0.1
  CHECK(f16[3] == 65504.0);
  CHECK(f16[4] == doctest::Approx(1.1920928955078125e-07));  // subnormal half: 2 * 2^-24
  CHECK(f16[5] == 65504.0);  // the largest value that still rounds to a finite half
  // Beyond that a weight would be stored as inf (a file qkv then refuses): refused, naming the tensor.
  CHECK_ERROR(to_safetensors_bytes({{"w", Tensor::from({1.0, 65520.0, -7e4})}}, {}, StorageType::F16),
              "tensor 'w' has 2 values beyond float16's range (largest magnitude 70000");
  CHECK_NOTHROW(to_safetensors_bytes({{"w", Tensor::from({1e30})}}, {}, StorageType::BF16));
  CHECK(f16[6] == doctest::Approx(3.140625));
  const auto bf = parse(to_safetensors_bytes({{"x", x}}, {}, StorageType::BF16)).find("x").to_vector();
  CHECK(bf[0] == 1.0);
  CHECK(bf[2] == doctest::Approx(0.10009765625));
  CHECK(bf[6] == doctest::Approx(3.140625));
  CHECK_ERROR(parse_storage_type("f8"), "unknown storage type 'f8'");
}

TEST_CASE("bad files give qkv::Error, never a crash or a huge allocation") {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(parse(raw(ok, 8)).find("a").numel() == 2);
  CHECK_ERROR(parse(std::string("\x01\x02", 2)), "truncated file (2 bytes");
  CHECK_ERROR(parse(raw(ok, 8).substr(0, 30)), "header length 54 is larger than the file's remaining 22 bytes");
  CHECK_ERROR(parse(raw(ok, 8, 5'000'000'000ULL)), "header length 5000000000 exceeds the limit");
  CHECK_ERROR(parse(raw("{not json", 0)), "the header is not valid JSON");
  CHECK_ERROR(parse(raw(ok + std::string("\0garbage", 8), 8)), "the header holds a NUL byte at offset 62");
  CHECK_ERROR(parse(raw(ok + " x", 8)), "the header is not valid JSON");
  CHECK(parse(raw(ok + "   ", 8)).find("a").numel() == 2);  // spaces pad a header
  CHECK_ERROR(parse(raw("[1,2]", 0)), "the header must be a JSON object");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8)),
              "data_offsets [0, 16] are out of bounds for a 8-byte buffer");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
              "tensor 'b' starts at byte 4, expected 8");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
              "shape [3] of F32 needs 12 bytes, but data_offsets cover 8");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8)), "unknown or unsupported dtype 'Q4'");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)),
              "duplicate tensor name 'a'");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8)), "tensors cover 4 bytes but the buffer has 8");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8)),
              "is larger than the file's data");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}})", 8)), "shape entries must be non-negative");
  CHECK_ERROR(parse(raw(R"({"__metadata__":{"k":1}})", 0)), "__metadata__ value for 'k' is not a string");
  CHECK_ERROR(parse(raw(R"({"a":{"dtype":"F32"}})", 0)), "tensor 'a' needs dtype, shape and data_offsets");
  CHECK_ERROR(read_safetensors(test::temp_file("does-not-exist.safetensors")), "no such file");
}

TEST_CASE("atomic write leaves no temporary file and replaces the old file whole") {
  const std::string path = test::temp_file("atomic.safetensors");
  write_safetensors(path, {{"a", Tensor::ones({4})}}, {});
  write_safetensors(path, {{"a", Tensor::zeros({2})}}, {});
  CHECK(read_safetensors(path).find("a").numel() == 2);
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}
