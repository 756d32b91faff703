#include "qkv/train/run/run_dir.h"

#include <qkv/core/errors.h>
#include <qkv/core/files.h>
#include <qkv/train/io/files.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace qkv {
namespace fs = std::filesystem;
namespace {

constexpr const char* kMarker = ".qkv-run";

bool is_checkpoint(const std::string& name) { return checkpoint_step(name) >= 0; }

// A file qkv writes into a run directory (0.1's set, plus exports and temporaries).
bool is_own_output(const fs::directory_entry& e) {
  const std::string name = e.path().filename().string();
  if (e.is_directory()) {
    if (name != "checkpoints") return false;
    for (const auto& c : fs::directory_iterator(e.path())) {
      const std::string n = c.path().filename().string();
      if (!c.is_regular_file() || !(is_checkpoint(n) || is_temporary_name(n))) return false;
    }
    return true;
  }
  return e.is_regular_file() && (name == "config.toml" || name == "train.log" || name == "metrics.jsonl" ||
                                 name == "report.html" || is_temporary_name(name) ||
                                 (name.rfind("model", 0) == 0 && e.path().extension() == ".safetensors"));
}

// Checkpoint count, newest step and whether there is a final model: what a replacement would lose.
struct Contents {
  int checkpoints = 0;
  std::string newest;
  bool model = false;
  bool empty() const { return checkpoints == 0 && !model; }
};
Contents contents_of(const fs::path& dir) {
  Contents c;
  c.model = fs::exists(dir / "model.safetensors");
  const auto all = list_checkpoints(dir / "checkpoints");
  c.checkpoints = static_cast<int>(all.size());
  if (!all.empty()) c.newest = all.back().filename().string();
  return c;
}

std::string describe(const Contents& c) {
  if (c.empty()) return "no checkpoints and no model";
  std::string s = c.model ? "model.safetensors" : "no final model";
  if (c.checkpoints > 0) s += fmt::format(", {} checkpoint{} (newest {})", c.checkpoints, c.checkpoints == 1 ? "" : "s", c.newest);
  return s;
}

std::string holder_of(const fs::path& marker) {
  std::ifstream in(marker);
  std::string line, pid;
  while (std::getline(in, line))
    if (line.rfind("pid ", 0) == 0) pid = line.substr(4);
  return pid.empty() ? "another process" : "process " + pid;
}

// out_dir and the run directory in it. A path component that is a file is the user's mistake (exit 2); a folder
// that cannot be written, a failure to write (exit 1).
void make_directory(const fs::path& dir) {
  std::error_code ec;
  for (fs::path p = dir; !p.empty() && p != p.root_path(); p = p.parent_path())
    if (fs::exists(fs::symlink_status(p, ec)) && !fs::is_symlink(fs::symlink_status(p, ec)) && !fs::is_directory(p, ec)) {
      QKV_CHECK(p == dir, "train: {} is not a folder (a file is in the way of the run directory {})", p.string(),
                dir.string());
      fail("train: the run directory {} is not a folder", dir.string());
    }
  fs::create_directories(dir, ec);
  QKV_CHECK(ec != std::errc::filename_too_long && ec != std::errc::too_many_symbolic_link_levels,
            "train: the run directory {}: {}", dir.string(), ec.message());
  if (ec || !fs::is_directory(dir))
    throw WriteError(fmt::format("train: cannot create the run directory {}: {}", dir.string(), ec.message()));
}

}  // namespace

std::string checkpoint_name(std::int64_t step) { return fmt::format("step_{:09d}.safetensors", step); }

std::int64_t checkpoint_step(const std::string& filename) {
  constexpr std::string_view prefix = "step_", suffix = ".safetensors";
  if (filename.size() <= prefix.size() + suffix.size() || filename.rfind(prefix, 0) != 0 ||
      filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  const char* first = filename.data() + prefix.size();
  const char* last = filename.data() + filename.size() - suffix.size();
  std::int64_t step = -1;
  const auto [end, ec] = std::from_chars(first, last, step);
  return ec == std::errc() && end == last && step >= 0 ? step : -1;
}

std::vector<fs::path> list_checkpoints(const fs::path& dir) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir))
      if (const std::int64_t step = checkpoint_step(e.path().filename().string()); step >= 0)
        found.emplace_back(step, e.path());
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [step, path] : found) out.push_back(std::move(path));
  return out;
}

void check_run_name(const std::string& name, const std::string& where) {
  QKV_CHECK(!name.empty() && name != "." && name != ".." && name.find_first_of(std::string("/\\\0", 3)) == std::string::npos,
            "{}: run.name: \"{}\" is not a plain directory name (it must not be empty, \".\" or \"..\", nor contain "
            "'/', '\\' or NUL: the run directory is run.out_dir/run.name)",
            where, name);
}

bool is_run_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) return false;  // a symlink is never replaced or reused
  if (fs::is_regular_file(dir / kMarker)) return true;
  if (!fs::is_regular_file(dir / "config.toml") || !fs::is_regular_file(dir / "train.log")) return false;
  for (const auto& e : fs::directory_iterator(dir))
    if (!is_own_output(e)) return false;
  return true;
}

RunDir::RunDir(const fs::path& dir, RunDirMode mode) : path_(dir) {
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(dir, ec));
  const bool link = fs::is_symlink(fs::symlink_status(dir, ec));
  if (mode == RunDirMode::Resume) {
    QKV_CHECK(exists && fs::is_directory(dir), "resume: run directory {} does not exist{}", dir.string(),
              link ? " (it is a symbolic link to nothing)" : "");
    if (link) path_ = fs::canonical(dir);  // a link to a run (runs/latest): the run is where it leads
    QKV_CHECK(is_run_dir(path_), "resume: {} is not a qkv run directory (it has no {} marker)", path_.string(), kMarker);
    lock();
  } else if (link) {
    fail("run directory {} is a symbolic link: a new run never replaces or writes through one (resume the run it "
         "leads to with --resume {}, or choose another run.name)", dir.string(), shell_quote(dir.string()));
  } else if (!exists) {
    make_directory(dir);
    lock();
  } else {
    QKV_CHECK(is_run_dir(dir),
              "run directory {} exists but is not a qkv run directory (no {} marker, or files qkv did not write); "
              "--force only replaces qkv's own runs: choose another run.name or move it away yourself",
              dir.string(), kMarker);
    const Contents before = contents_of(dir);
    QKV_CHECK(mode == RunDirMode::Force || before.empty(),
              "run directory {} already exists ({}); pass --resume {} to continue it or --force to start over",
              dir.string(), describe(before), shell_quote(dir.string()));
    lock();
    clear_contents();
    note_ = before.empty() ? fmt::format("reused {}, an earlier run that wrote nothing", dir.string())
                           : fmt::format("--force: replaced the earlier run in {} ({})", dir.string(), describe(before));
  }
  remove_stale_temporaries();
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
}

// The lock is held on the directory itself, which a user cannot delete by accident while keeping its files:
// deleting .qkv-run (then --force) or the whole directory never gives a run a second writer. The marker names
// the holder for the message a second process prints.
void RunDir::lock() {
  const fs::path marker = path_ / kMarker;
  lock_fd_ = ::open(path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (lock_fd_ < 0) throw WriteError(fmt::format("train: cannot open {}: {}", path_.string(), std::strerror(errno)));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd_);
    lock_fd_ = -1;
    QKV_CHECK(err != EWOULDBLOCK, "run directory {} is in use by {} (a qkv run is training there); wait for it to "
              "finish or stop it first", path_.string(), holder_of(marker));
    fail("train: cannot lock {}: {}", path_.string(), std::strerror(err));
  }
  const int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const std::string text = fmt::format("qkv run directory\npid {}\n", ::getpid());
  const bool written = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  if (fd >= 0) ::close(fd);
  if (!written) throw WriteError(fmt::format("train: cannot write {}: {}", marker.string(), std::strerror(err)));
}

void RunDir::check_present() const {
  struct stat held {}, now {};
  // The folder at the path must still be the one locked (a folder held open keeps its inode: a new one never
  // takes its number).
  const bool same = lock_fd_ >= 0 && ::fstat(lock_fd_, &held) == 0 && ::stat(path_.c_str(), &now) == 0 &&
                    now.st_dev == held.st_dev && now.st_ino == held.st_ino;
  if (!same)
    throw WriteError(fmt::format("the run directory {} was deleted or moved while training: stopping (nothing more "
                                 "can be saved there)", path_.string()));
}

void RunDir::clear_contents() {
  for (const auto& e : fs::directory_iterator(path_))
    if (e.path().filename() != kMarker) fs::remove_all(e.path());
}

void RunDir::remove_stale_temporaries() {
  // Only this process may write here now (it holds the lock): any temporary is left by a killed writer.
  int removed = 0;
  for (const fs::path& d : {path_, path_ / "checkpoints"}) {
    if (!fs::is_directory(d)) continue;
    for (const auto& e : fs::directory_iterator(d))
      if (e.is_regular_file() && is_temporary_name(e.path().filename().string())) removed += fs::remove(e.path()) ? 1 : 0;
  }
  if (removed > 0)
    note_ += fmt::format("{}removed {} stale temporary file{} left by an interrupted write", note_.empty() ? "" : "; ",
                         removed, removed == 1 ? "" : "s");
}

}  // namespace qkv
