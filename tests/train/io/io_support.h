#pragma once
// Shared by the tests of train/io: comparing logits with a reference, and a folder the CLI must refuse.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "../run/run_support.h"

namespace qkv::test {

/// The largest |a - b| over the largest |b|.
inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff = std::max(diff, std::abs(a[i] - b[i])), scale = std::max(scale, std::abs(b[i]));
  return diff / scale;
}

/// `qkv predict DIR --ids "1 2"` must exit 2 naming `what`.
inline void refused(const std::filesystem::path& dir, const std::string& what) {
  const auto r = run_cli_captured({"qkv", "predict", dir.string(), "--ids", "1 2"}, scratch_dir("cli").string());
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find(what) != std::string::npos, r.err);
}

}  // namespace qkv::test
