#include "qkv/core/files.h"

#include <fmt/format.h>

#include <unistd.h>

namespace qkv {

std::string temporary_path(const std::filesystem::path& target) {
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  return (dir / fmt::format(".{}.tmp.{}", target.filename().string(), static_cast<long>(::getpid()))).string();
}

bool is_temporary_name(const std::string& name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string::npos;
}

}  // namespace qkv
