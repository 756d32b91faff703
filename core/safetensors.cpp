#include "qkv/core/safetensors.h"

#include "qkv/core/errors.h"
#include "qkv/core/files.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <unistd.h>

namespace qkv {
namespace {

static_assert(std::endian::native == std::endian::little, "qkv's safetensors code assumes a little-endian host");

// The reference implementation's cap: no honest header is larger.
constexpr std::uint64_t kMaxHeader = 100'000'000;

// float32 -> bfloat16 with round-to-nearest-even; NaN stays NaN.
std::uint16_t to_bf16(float f) {
  const auto u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

// float32 -> IEEE half with round-to-nearest-even, subnormals, overflow to inf, NaN kept.
std::uint16_t to_f16(float f) {
  const auto u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // NaN
  if (absu >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (absu < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (absu < 0x33000000u) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
    const std::uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(absu >> 23);  // value = mant * 2^(e-150) = h * 2^-24
    const std::uint32_t half_ulp = 1u << (shift - 1);
    std::uint32_t h = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1);
    if (rest > half_ulp || (rest == half_ulp && (h & 1u))) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }
  std::uint32_t h = ((absu - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  const std::uint32_t rest = absu & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

float from_f16(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

// The safetensors dtypes qkv reads and writes, once: the name in a file, bytes per element, what it loads as
// (F16 and BF16 widen to float32; the others are copied as they are).
struct FileDType {
  const char* name;
  std::size_t size;
  DType loads_as;
  bool half;  // F16 or BF16
};
constexpr FileDType kFileDTypes[] = {{"F32", 4, kFloat32, false}, {"F64", 8, kFloat64, false},
                                     {"F16", 2, kFloat32, true},  {"BF16", 2, kFloat32, true},
                                     {"I64", 8, kInt64, false}};

const FileDType* find_file_dtype(const std::string& name) {
  for (const FileDType& d : kFileDTypes)
    if (name == d.name) return &d;
  return nullptr;
}

const FileDType& on_disk(const Tensor& t, StorageType storage) {
  const char* name = "F32";
  if (t.dtype() == kInt64) name = "I64";
  else if (t.dtype() == kFloat64 && storage == StorageType::F32) name = "F64";
  else if (storage == StorageType::F16) name = "F16";
  else if (storage == StorageType::BF16) name = "BF16";
  return *find_file_dtype(name);
}

}  // namespace

StorageType parse_storage_type(const std::string& s) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (l == "f32" || l == "float32") return StorageType::F32;
  if (l == "f16" || l == "float16") return StorageType::F16;
  if (l == "bf16" || l == "bfloat16") return StorageType::BF16;
  fail("dtype: unknown storage type '{}' (expected f32, f16 or bf16)", s);
}

Tensor SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  return {};
}

namespace {

// float16 holds finite values up to 65504 (those from 65520 round to inf): a weight beyond it would be written as
// inf, a file qkv itself refuses to load.
void check_f16_range(const std::string& name, const Tensor& t) {
  const Tensor v = t.to(kFloat32);
  const float* p = v.data<float>();
  std::int64_t over = 0;
  float largest = 0;
  for (std::int64_t i = 0; i < v.numel(); ++i)
    if (std::isfinite(p[i]) && (std::bit_cast<std::uint32_t>(p[i]) & 0x7fffffffu) >= 0x477ff000u) {
      ++over;
      largest = std::max(largest, std::abs(p[i]));
    }
  QKV_CHECK(over == 0, "safetensors: tensor '{}' has {} value{} beyond float16's range (largest magnitude {:g}; float16 "
            "holds up to 65504): store it as bf16 or f32", name, over, over == 1 ? "" : "s", largest);
}

}  // namespace

std::string to_safetensors_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                 const std::map<std::string, std::string>& metadata, StorageType storage) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    QKV_CHECK(name != "__metadata__" && !name.empty(), "safetensors: invalid tensor name '{}'", name);
    if (storage == StorageType::F16 && is_floating(t.dtype())) check_f16_range(name, t);
    QKV_CHECK(seen.insert(name).second, "safetensors: duplicate tensor name '{}'", name);
    const auto info = on_disk(t, storage);
    const std::size_t bytes = static_cast<std::size_t>(t.numel()) * info.size;
    header[name] = {{"dtype", info.name}, {"shape", t.shape().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // pad so the buffer starts 8-byte aligned
  std::string out(8, '\0');
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : tensors) {
    const auto info = on_disk(t, storage);
    const auto start = out.size();
    out.resize(start + static_cast<std::size_t>(t.numel()) * info.size);
    char* dst = out.data() + start;
    if (info.size == 8 || (t.dtype() == kFloat32 && storage == StorageType::F32)) {
      std::memcpy(dst, t.raw_data(), static_cast<std::size_t>(t.numel()) * info.size);
    } else {
      const auto v = t.to(kFloat32);
      const float* src = v.data<float>();
      for (std::int64_t i = 0; i < t.numel(); ++i) {
        const std::uint16_t h = storage == StorageType::F16 ? to_f16(src[i]) : to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
  }
  return out;
}

namespace {

// One tensor's header entry, checked against the buffer it must lie in.
struct Entry {
  std::string name;
  std::string dtype;
  Shape shape;
  std::uint64_t begin, end;
};

// The JSON header after the 8-byte length, refusing duplicate top-level keys (a plain parse keeps the last).
// `bytes` holds at least the header; `size` is the whole file's.
nlohmann::json read_header(std::span<const std::byte> bytes, std::uint64_t size, const std::string& source) {
  QKV_CHECK(size >= 8, "safetensors: {}: truncated file ({} bytes; the header length alone needs 8)", source, size);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  QKV_CHECK(n <= kMaxHeader, "safetensors: {}: header length {} exceeds the limit of {} bytes", source, n, kMaxHeader);
  QKV_CHECK(n <= size - 8, "safetensors: {}: header length {} is larger than the file's remaining {} bytes", source,
            n, size - 8);
  QKV_ASSERT(bytes.size() >= 8 + n);
  const auto* hdr = reinterpret_cast<const char*>(bytes.data() + 8);
  // JSON text and the spaces that may pad it, nothing else: nlohmann's parser would stop at a NUL and take the
  // JSON before it, ignoring what follows.
  if (const void* nul = std::memchr(hdr, 0, n); nul != nullptr)
    fail("safetensors: {}: the header holds a NUL byte at offset {} (a header is JSON text padded with spaces)", source,
         8 + (static_cast<const char*>(nul) - hdr));
  std::set<std::string> keys;
  std::string duplicate;
  const auto cb = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1) {
      const auto k = parsed.get<std::string>();
      if (!keys.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json header = nlohmann::json::parse(hdr, hdr + n, cb, /*allow_exceptions=*/false);
  QKV_CHECK(!header.is_discarded(), "safetensors: {}: the header is not valid JSON", source);
  QKV_CHECK(header.is_object(), "safetensors: {}: the header must be a JSON object", source);
  QKV_CHECK(duplicate.empty(), "safetensors: {}: duplicate tensor name '{}'", source, duplicate);
  return header;
}

void read_metadata(const nlohmann::json& value, SafetensorsFile& file, const std::string& source) {
  QKV_CHECK(value.is_object(), "safetensors: {}: __metadata__ must be an object of strings", source);
  for (const auto& [k, v] : value.items()) {
    QKV_CHECK(v.is_string(), "safetensors: {}: __metadata__ value for '{}' is not a string", source, k);
    file.metadata[k] = v.get<std::string>();
  }
}

// A shape no larger than the buffer could hold (so nothing is allocated from a header's claim alone).
Shape read_shape(const nlohmann::json& shape, std::size_t buffer_size, const std::string& name,
                 const std::string& source) {
  QKV_CHECK(shape.is_array() && shape.size() <= Shape::kMaxRank,
            "safetensors: {}: tensor '{}': shape must be an array of at most {} dims", source, name, Shape::kMaxRank);
  Shape s;
  std::uint64_t numel = 1;
  for (const auto& d : shape) {
    QKV_CHECK(d.is_number_unsigned(), "safetensors: {}: tensor '{}': shape entries must be non-negative integers",
              source, name);
    const std::uint64_t v = d.get<std::uint64_t>();
    QKV_CHECK(v <= buffer_size && (v == 0 || numel <= buffer_size / v),
              "safetensors: {}: tensor '{}': shape {} is larger than the file's data", source, name, shape.dump());
    numel *= v;
    s.push_back(static_cast<std::int64_t>(v));
  }
  return s;
}

Entry read_entry(const std::string& name, const nlohmann::json& value, std::size_t buffer_size,
                 const std::string& source) {
  QKV_CHECK(value.is_object() && value.contains("dtype") && value.contains("shape") && value.contains("data_offsets"),
            "safetensors: {}: tensor '{}' needs dtype, shape and data_offsets", source, name);
  const auto& dt = value["dtype"];
  const auto& offs = value["data_offsets"];
  QKV_CHECK(dt.is_string(), "safetensors: {}: tensor '{}': dtype is not a string", source, name);
  const std::string dtype = dt.get<std::string>();
  const FileDType* file_dtype = find_file_dtype(dtype);
  QKV_CHECK(file_dtype != nullptr,
            "safetensors: {}: tensor '{}' has unknown or unsupported dtype '{}' (supported: F32, F64, F16, BF16, "
            "I64)",
            source, name, dtype);
  const Shape s = read_shape(value["shape"], buffer_size, name, source);
  QKV_CHECK(offs.is_array() && offs.size() == 2 && offs[0].is_number_unsigned() && offs[1].is_number_unsigned(),
            "safetensors: {}: tensor '{}': data_offsets must be [begin, end]", source, name);
  const std::uint64_t b = offs[0].get<std::uint64_t>(), e = offs[1].get<std::uint64_t>();
  QKV_CHECK(b <= e && e <= buffer_size,
            "safetensors: {}: tensor '{}': data_offsets [{}, {}] are out of bounds for a {}-byte buffer", source, name,
            b, e, buffer_size);
  const std::size_t item = file_dtype->size;
  const auto numel = static_cast<std::uint64_t>(s.numel());
  QKV_CHECK(e - b == numel * item, "safetensors: {}: tensor '{}': shape {} of {} needs {} bytes, but data_offsets cover {}",
            source, name, s.str(), dtype, numel * item, e - b);
  return {name, dtype, s, b, e};
}

// The data ranges tile the buffer exactly: sorted by start, without gaps or overlaps.
void check_contiguous(std::vector<Entry>& entries, std::size_t buffer_size, const std::string& source) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  std::uint64_t expect = 0;
  for (const auto& en : entries) {
    QKV_CHECK(en.begin == expect,
              "safetensors: {}: tensor '{}' starts at byte {}, expected {} (data ranges must be contiguous, without "
              "gaps or overlaps)",
              source, en.name, en.begin, expect);
    expect = en.end;
  }
  QKV_CHECK(expect == buffer_size, "safetensors: {}: tensors cover {} bytes but the buffer has {}", source, expect,
            buffer_size);
}

// F32, F64 and I64 are copied as they are; F16 and BF16 widen to float32. `read(dst, offset, bytes)` fills dst
// with the buffer's bytes [offset, offset + bytes): from memory, or from the file itself, so a file read from disk
// goes straight into its tensors (a half-precision one through a small staging block).
template <class Read>
Tensor decode(const Entry& en, Read&& read) {
  const std::size_t count = static_cast<std::size_t>(en.shape.numel());
  const FileDType& file_dtype = *find_file_dtype(en.dtype);
  if (!file_dtype.half) {
    Tensor t = Tensor::empty(en.shape, file_dtype.loads_as);
    if (count > 0) read(t.raw_data(), en.begin, en.end - en.begin);
    return t;
  }
  Tensor t = Tensor::empty(en.shape, kFloat32);
  float* dst = t.data<float>();
  constexpr std::size_t kBlock = 1 << 16;  // halves per staging read
  std::vector<std::uint16_t> half(std::min(count, kBlock));
  for (std::size_t at = 0; at < count; at += kBlock) {
    const std::size_t n = std::min(kBlock, count - at);
    read(half.data(), en.begin + 2 * at, 2 * n);
    for (std::size_t i = 0; i < n; ++i) dst[at + i] = en.dtype == "F16" ? from_f16(half[i]) : from_bf16(half[i]);
  }
  return t;
}

}  // namespace

namespace {
// Every claim of a header (metadata, dtypes, shapes, offsets) checked against a buffer of `buffer_size` bytes.
std::vector<Entry> read_entries(const nlohmann::json& header, std::size_t buffer_size, SafetensorsFile& file,
                                const std::string& source) {
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") read_metadata(value, file, source);
    else entries.push_back(read_entry(name, value, buffer_size, source));
  }
  check_contiguous(entries, buffer_size, source);
  return entries;
}
}  // namespace

SafetensorsFile parse_safetensors(std::span<const std::byte> bytes, const std::string& source) {
  const nlohmann::json header = read_header(bytes, bytes.size(), source);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  const std::size_t buffer_size = bytes.size() - 8 - static_cast<std::size_t>(n);
  const std::byte* buffer = bytes.data() + 8 + n;
  SafetensorsFile file;
  const auto from_memory = [buffer](void* dst, std::uint64_t offset, std::size_t bytes) { std::memcpy(dst, buffer + offset, bytes); };
  for (const auto& en : read_entries(header, buffer_size, file, source)) file.tensors.emplace_back(en.name, decode(en, from_memory));
  return file;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata, StorageType storage) {
  write_file_atomic(path, to_safetensors_bytes(tensors, metadata, storage));
}

SafetensorsFile read_safetensors(const std::string& path) {
  // The header first: a file whose header does not describe its size exactly, or that would not fit in memory,
  // is refused before its data is read (a 20 GB sparse file was read whole before its header was looked at).
  check_regular_input(path, "safetensors");
  std::ifstream in(path, std::ios::binary);
  QKV_CHECK(in.good(), "safetensors: {}: cannot open", path);
  std::error_code ec;
  const std::uint64_t size = std::filesystem::file_size(path, ec);
  QKV_CHECK(!ec, "safetensors: {}: cannot read its size", path);
  std::string prefix(static_cast<std::size_t>(std::min<std::uint64_t>(size, 8)), '\0');
  in.read(prefix.data(), static_cast<std::streamsize>(prefix.size()));
  std::uint64_t n = 0;
  if (prefix.size() == 8) std::memcpy(&n, prefix.data(), 8);
  if (prefix.size() == 8 && n <= kMaxHeader && n <= size - 8) {
    prefix.resize(static_cast<std::size_t>(8 + n));
    in.read(prefix.data() + 8, static_cast<std::streamsize>(n));
    QKV_CHECK(in.gcount() == static_cast<std::streamsize>(n), "safetensors: {}: short read", path);
  }
  const nlohmann::json header = read_header(std::as_bytes(std::span(prefix.data(), prefix.size())), size, path);
  SafetensorsFile file;
  const auto entries = read_entries(header, static_cast<std::size_t>(size - 8 - n), file, path);
  const auto have = physical_memory_bytes();
  QKV_CHECK(have == 0 || size <= have,
            "safetensors: {}: the file holds {:.1f} GB of tensors, more than this machine's {:.1f} GB of memory", path,
            double(size) / 1e9, double(have) / 1e9);
  // Each tensor read from the file into its own memory: a model reads in about its own size.
  const std::uint64_t base = 8 + n;
  const auto from_file = [&](void* dst, std::uint64_t offset, std::size_t bytes) {
    in.seekg(static_cast<std::streamoff>(base + offset));
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
    QKV_CHECK(in.gcount() == static_cast<std::streamsize>(bytes), "safetensors: {}: short read at byte {} (the file "
              "changed while it was read?)", path, base + offset);
  };
  for (const auto& en : entries) file.tensors.emplace_back(en.name, decode(en, from_file));
  return file;
}

}  // namespace qkv
