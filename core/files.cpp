#include "qkv/core/files.h"

#include "qkv/core/errors.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

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

namespace fs = std::filesystem;
namespace {

template <class... Args>
[[noreturn]] void throw_write(fmt::format_string<Args...> f, Args&&... args) {
  throw WriteError(fmt::format(f, std::forward<Args>(args)...));
}

// Writes all of `bytes` to `fd`, retrying short writes and EINTR; returns 0 or the errno that stopped it.
int write_all(int fd, const char* data, std::size_t size, std::size_t* done = nullptr) {
  std::size_t n = 0;
  while (n < size) {
    const ssize_t w = ::write(fd, data + n, size - n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (done != nullptr) *done = n;
      return w < 0 ? errno : EIO;
    }
    n += static_cast<std::size_t>(w);
  }
  if (done != nullptr) *done = n;
  return 0;
}

bool same_file(const struct stat& a, int fd) {
  struct stat b {};
  return ::fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// A device, FIFO or socket takes the bytes as a stream; /dev/stdout (or a link to it) is this process's own
// stream, written through the stdio buffer so earlier output stays in order.
void write_through(const std::string& path, const struct stat& st, const std::string& bytes) {
  for (int fd : {STDOUT_FILENO, STDERR_FILENO}) {
    if (!same_file(st, fd)) continue;
    std::fflush(fd == STDOUT_FILENO ? stdout : stderr);
    if (const int err = write_all(fd, bytes.data(), bytes.size()); err != 0)
      throw_write("write: writing {} failed: {}", path, std::strerror(err));
    return;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY | (S_ISREG(st.st_mode) ? O_TRUNC : 0));
  if (fd < 0) throw_write("write: cannot open {}: {}", path, std::strerror(errno));
  const int err = write_all(fd, bytes.data(), bytes.size());
  ::close(fd);
  if (err != 0) throw_write("write: writing {} failed: {}", path, std::strerror(err));
}

// Under /dev (but for /dev/shm's files) or /proc, a path names a process's streams or a device: it is never
// replaced by a file.
bool is_special_path(const fs::path& p) {
  const std::string s = p.lexically_normal().string();
  return (s.rfind("/dev/", 0) == 0 && s.rfind("/dev/shm/", 0) != 0) || s.rfind("/proc/", 0) == 0;
}

// The regular file a path stands for: itself, or the end of its chain of symbolic links. Returns true when a link
// in the chain leads into /dev or /proc (then the caller writes through).
bool resolve_links(fs::path& p) {
  for (int hops = 0; hops < 40; ++hops) {
    if (is_special_path(p)) return true;
    std::error_code ec;
    if (!fs::is_symlink(fs::symlink_status(p, ec))) return false;
    const fs::path target = fs::read_symlink(p, ec);
    if (ec) return false;
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  fail("write: {}: too many levels of symbolic links", p.string());
}

}  // namespace

namespace {
// Where an output to `path` goes by the output rule: false and `target` = the regular file to replace (the end of
// any chain of links), or true when it must be written through (a device, FIFO or socket; `st` is filled then).
bool written_through(const std::string& path, fs::path& target, struct stat& st) {
  QKV_CHECK(!path.empty() && path.back() != '/', "write: {} is a directory, not a file name", path);
  if (::stat(path.c_str(), &st) == 0) {  // what the path points at, through any links
    if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return true;
    QKV_CHECK(S_ISREG(st.st_mode), "write: {} is {}; give a file name", path, file_kind(st.st_mode));
  } else {
    QKV_CHECK(errno == ENOENT, "write: {}: {}", path, std::strerror(errno));
    struct stat lst {};
    QKV_CHECK(::lstat(path.c_str(), &lst) != 0, "write: {} is a symbolic link to a missing file; give a file name",
              path);
  }
  target = path;
  return resolve_links(target);
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  fs::path target;
  struct stat st {};
  if (written_through(path, target, st)) return write_through(path, st, bytes);
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  fs::path target;
  struct stat st {};
  QKV_CHECK(!written_through(path, target, st), "write: {} is {}: it takes a stream, not a file written in place", path,
            file_kind(st.st_mode));
  target_ = target.string();
  tmp_ = temporary_path(target);
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_write("write: cannot create {}: {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, std::size_t n) {
  QKV_CHECK(fd_ >= 0, "write: {} is already committed", path_);
  if (const int err = write_all(fd_, static_cast<const char*>(data), n); err != 0)
    throw_write("write: writing {} failed: {}", tmp_, std::strerror(err));
}

void AtomicFile::write_at(std::uint64_t offset, const void* data, std::size_t n) {
  QKV_CHECK(fd_ >= 0, "write: {} is already committed", path_);
  const ssize_t w = ::pwrite(fd_, data, n, static_cast<off_t>(offset));
  if (w != static_cast<ssize_t>(n)) throw_write("write: writing {} failed: {}", tmp_, std::strerror(w < 0 ? errno : EIO));
}

void AtomicFile::commit() {
  QKV_CHECK(fd_ >= 0, "write: {} is already committed", path_);
  const int fd = std::exchange(fd_, -1);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw_write("write: flushing {} failed: {}", tmp_, std::strerror(err));
  }
  if (::rename(tmp_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw_write("write: renaming {} to {} failed: {}", tmp_, path_, std::strerror(err));
  }
  const fs::path dir = fs::path(target_).has_parent_path() ? fs::path(target_).parent_path() : fs::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // make the rename itself durable
    ::close(dfd);
  }
}


AppendFile::AppendFile(const std::string& path, double retry_seconds) : path_(path), retry_seconds_(retry_seconds) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_write("cannot open {} for appending: {}", path, std::strerror(errno));
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

AppendFile::AppendFile(AppendFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)), retry_seconds_(o.retry_seconds_) {
  o.fd_ = -1;
}

AppendFile& AppendFile::operator=(AppendFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    retry_seconds_ = o.retry_seconds_;
    o.fd_ = -1;
  }
  return *this;
}

void AppendFile::append(const std::string& text) {
  QKV_CHECK(fd_ >= 0, "append: no file is open");
  const off_t start = ::lseek(fd_, 0, SEEK_END);  // where this line begins, to cut a partial one off
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(retry_seconds_);
  std::size_t written = 0;
  for (auto pause = std::chrono::milliseconds(10);; pause = std::min(pause * 2, std::chrono::milliseconds(500))) {
    std::size_t done = 0;
    const int err = write_all(fd_, text.data() + written, text.size() - written, &done);
    written += done;
    if (err == 0) return;
    if (std::chrono::steady_clock::now() >= deadline) {
      if (start >= 0 && ::ftruncate(fd_, start) != 0) {}  // keep whole lines only (best effort)
      throw_write("writing {} failed: {} (retried for {:.0f} s; its last lines are missing)", path_, std::strerror(err),
                  retry_seconds_);
    }
    std::this_thread::sleep_for(pause);
  }
}

std::uint64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page) : 0;
}

}  // namespace qkv
