#include "qkv/datasets/nfc.h"

#include "qkv/datasets/unicode_nfc.h"
#include "qkv/datasets/utf8.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace qkv {
namespace {

// Hangul syllables decompose and compose by arithmetic (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<char32_t, std::pair<char32_t, char32_t>> decomposition;
  std::unordered_map<char32_t, std::uint8_t> ccc;
  std::unordered_map<std::uint64_t, char32_t> composition;  // (first << 32 | second) -> composite
  Tables() {
    using namespace unicode_nfc;
    for (const auto& r : kCombiningClasses)
      for (char32_t c = r.lo; c <= r.hi; ++c) ccc[c] = r.ccc;
    const auto excluded = [](char32_t c) {
      return std::any_of(std::begin(kCompositionExcluded), std::end(kCompositionExcluded),
                         [c](const Range& r) { return c >= r.lo && c <= r.hi; });
    };
    for (const auto& d : kDecompositions) {
      decomposition[d.cp] = {d.first, d.second};
      if (d.second != 0 && !excluded(d.cp)) composition[std::uint64_t(d.first) << 32 | d.second] = d.cp;
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

std::uint8_t combining_class(char32_t c) {
  const auto& m = tables().ccc;
  const auto it = m.find(c);
  return it == m.end() ? 0 : it->second;
}

void decompose(char32_t c, std::vector<char32_t>& out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const char32_t s = c - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto& m = tables().decomposition;
  const auto it = m.find(c);
  if (it == m.end()) {
    out.push_back(c);
    return;
  }
  decompose(it->second.first, out);
  if (it->second.second) decompose(it->second.second, out);
}

char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& m = tables().composition;
  const auto it = m.find(std::uint64_t(a) << 32 | b);
  return it == m.end() ? 0 : it->second;
}

}  // namespace

const char* nfc_unicode_version() { return unicode_nfc::kVersion; }

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; }))
    return std::string(text);
  std::vector<char32_t> cps;
  for (char32_t c : decode_utf8(text, "nfc")) decompose(c, cps);
  // canonical order: each run of non-starters sorted by combining class, stably
  for (std::size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + std::ptrdiff_t(i), cps.begin() + std::ptrdiff_t(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // canonical composition: each character joins the last starter unless blocked
  std::vector<char32_t> out;
  std::ptrdiff_t starter = -1;
  int last_class = -1;
  for (char32_t c : cps) {
    const int cc = combining_class(c);
    if (starter >= 0 && (last_class < cc || (last_class == 0 && out.size() == std::size_t(starter) + 1))) {
      if (const char32_t composite = compose_pair(out[std::size_t(starter)], c)) {
        out[std::size_t(starter)] = composite;
        continue;
      }
    }
    if (cc == 0) starter = std::ptrdiff_t(out.size());
    last_class = cc;
    out.push_back(c);
  }
  std::string s;
  for (char32_t c : out) s += encode_utf8(c);
  return s;
}

}  // namespace qkv
