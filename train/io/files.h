#pragma once
// Files qkv reads and writes on the user's behalf, with one rule each (README, "What qkv guarantees"):
//  - an output replaces only a regular file (or creates a new one), atomically: a temporary beside it, fsync,
//    rename. A symbolic link is followed (its target is replaced, the link stays). A character device, FIFO or
//    socket (/dev/null, /dev/stdout on a pipe or terminal) is written through, never replaced by a file; a
//    directory or block device is refused.
//  - an input is read only from a regular file of bounded size, never blocking on a FIFO or reading an endless
//    device;
//  - an append (metrics.jsonl, train.log) that fails is retried, and reported when it keeps failing.
#include <qkv/core/files.h>  // reading inputs: read_file_bytes, check_regular_input

#include <cstdint>
#include <string>

namespace qkv {

/// Writes `bytes` to `path` by the output rule above. Throws qkv::Error naming the path and the reason.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// A file that lines are appended to. A failed write (a full disk, a file-size limit) is retried with the
/// unwritten rest of the line for about `retry_seconds`; when it still fails, append() throws qkv::Error and
/// the file keeps only whole lines.
class AppendFile {
 public:
  AppendFile() = default;
  explicit AppendFile(const std::string& path, double retry_seconds = 5.0);
  ~AppendFile();
  AppendFile(AppendFile&& other) noexcept;
  AppendFile& operator=(AppendFile&& other) noexcept;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;

  bool is_open() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }
  /// Appends `text` whole (or throws and truncates back to the last whole line).
  void append(const std::string& text);

 private:
  int fd_ = -1;
  std::string path_;
  double retry_seconds_ = 5.0;
};

/// The machine's physical memory in bytes (0 when unknown): what the memory checks of configs, data and model
/// files compare against.
std::uint64_t physical_memory_bytes();

/// `word` quoted for a POSIX shell: unchanged when it holds only safe characters, else in single quotes.
std::string shell_quote(const std::string& word);

/// True when `text` holds an ASCII control character (below 0x20, or DEL) other than those in `allowed`.
bool has_control_character(const std::string& text, const std::string& allowed = "");

/// `text` with <, >, &, " and ' escaped for XML and HTML, and control characters other than tab and newline
/// (which XML 1.0 cannot hold at all) shown as U+FFFD.
std::string xml_escape(const std::string& text);

}  // namespace qkv
