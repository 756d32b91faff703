#include "qkv/core/files.h"

#include "qkv/core/errors.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace qkv {

std::string temporary_path(const std::filesystem::path& target) {
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  return (dir / fmt::format(".{}.tmp.{}", target.filename().string(), static_cast<long>(::getpid()))).string();
}

bool is_temporary_name(const std::string& name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string::npos;
}

const char* file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

void check_regular_input(const std::string& path, const std::string& what) {
  struct stat st {};
  QKV_CHECK(::stat(path.c_str(), &st) == 0, "{}: {}: {}", what, path,
            errno == ENOENT ? std::string("no such file") : std::string(std::strerror(errno)));
  QKV_CHECK(S_ISREG(st.st_mode), "{}: {} is {}, not a regular file", what, path, file_kind(st.st_mode));
}

std::string read_file_bytes(const std::string& path, const std::string& what, std::uint64_t max_bytes) {
  check_regular_input(path, what);
  // O_NONBLOCK: if the path was swapped for a FIFO since the check, the open fails instead of waiting.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  QKV_CHECK(fd >= 0, "{}: {}: cannot open: {}", what, path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: {} is not a regular file", what, path);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size > max_bytes) {
    ::close(fd);
    fail("{}: {} is {} bytes, more than the {} a {} file may have", what, path, size, max_bytes, what);
  }
  std::string bytes(static_cast<std::size_t>(size), '\0');  // the file's real size, never a claimed one
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    done += static_cast<std::size_t>(r);
  }
  ::close(fd);
  QKV_CHECK(done == bytes.size(), "{}: {}: short read ({} of {} bytes)", what, path, done, bytes.size());
  return bytes;
}

}  // namespace qkv
