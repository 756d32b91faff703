#pragma once
// Files, below everything that reads or writes them: the one rule for naming temporary files (every file qkv
// replaces, run outputs and the GEMM cache, is written to a temporary file beside it and then renamed or linked
// over it, so a reader never sees half a file), and the one rule for reading an input (a config, a data file, a
// model file): only a regular file of bounded size, never blocking on a FIFO or reading an endless device.

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

namespace qkv {

/// DIR/.NAME.tmp.PID for DIR/NAME: in the target's folder (so the rename stays on one filesystem), hidden, and
/// unique to this process.
std::string temporary_path(const std::filesystem::path& target);
/// True for a name temporary_path makes (what an interrupted write leaves; a run directory may remove them).
bool is_temporary_name(const std::string& file_name);

/// The bytes of a regular file of at most `max_bytes`; `what` names the file's role in errors ("config",
/// "safetensors"). Refuses directories, FIFOs, devices and larger files before reading anything.
std::string read_file_bytes(const std::string& path, const std::string& what = "safetensors",
                            std::uint64_t max_bytes = UINT64_MAX);

/// Throws qkv::Error unless `path` names a regular file (`what` names its role): FIFOs, devices and folders are
/// refused without opening them, so a reader never blocks on them.
void check_regular_input(const std::string& path, const std::string& what);

/// What a stat mode is, for messages: "a directory", "a FIFO", "a character device", ...
const char* file_kind(unsigned mode);

// The rules for files qkv reads and writes on the user's behalf (README, "What qkv guarantees"):
//  - an output replaces only a regular file (or creates a new one), atomically: a temporary beside it, fsync,
//    rename. A symbolic link is followed (its target is replaced, the link stays). A character device, FIFO or
//    socket (/dev/null, /dev/stdout on a pipe or terminal) is written through, never replaced by a file; a
//    directory or block device is refused.
//  - an input is read only from a regular file of bounded size, never blocking on a FIFO or reading an endless
//    device;
//  - an append (metrics.jsonl, train.log) that fails is retried, and reported when it keeps failing.

/// Writes `bytes` to `path` by the output rule above. Throws qkv::Error naming the path and the reason.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// A file written by the output rule as it is produced (a token shard, a large model): the bytes go to a temporary
/// file beside `path` (or beside the regular file a link at `path` leads to), and commit() flushes it to disk,
/// renames it into place and makes the rename durable. Dropped before commit(), it removes the temporary file and
/// `path` keeps what it held. A device, FIFO or socket at `path` is refused (it cannot be written in place). Every
/// failure throws WriteError naming the file.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, std::size_t n);
  /// Overwrites bytes already written (a header completed at the end).
  void write_at(std::uint64_t offset, const void* data, std::size_t n);
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, target_, tmp_;
  int fd_ = -1;
};

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

}  // namespace qkv
