#pragma once
// A run directory held by one process. qkv marks every run directory it creates with a `.qkv-run` file and
// holds an advisory lock (flock) on that file for as long as it trains there, so:
//  - `--force` replaces only a directory qkv itself created (never out_dir, a parent, or a user's folder);
//  - a second `train`, `--resume` or `--force` on a run that is training is refused, naming the process.
#include <filesystem>
#include <cstdint>
#include <string>
#include <vector>

namespace qkv {

/// How a run directory is opened.
enum class RunDirMode {
  Create,  ///< a new run: the directory must not exist (an empty qkv run left by a failed start is reused)
  Force,   ///< a new run replacing an earlier qkv run in the same directory
  Resume,  ///< continue the run in an existing qkv run directory
};

/// Throws qkv::Error unless `name` is one plain path component (not empty, ".", ".." and without '/', '\\' or
/// NUL): `run.name` may never point outside `run.out_dir`.
void check_run_name(const std::string& name, const std::string& where);

/// True when `dir` is a qkv run directory: it has the marker file, or (runs of qkv 0.1, made before the marker)
/// it holds config.toml and train.log and nothing but qkv's own outputs.
bool is_run_dir(const std::filesystem::path& dir);

/// A checkpoint's file name for a step: "step_000000042.safetensors" (9 digits or more).
std::string checkpoint_name(std::int64_t step);
/// The step a checkpoint's file name holds, or -1 when the name is not a checkpoint's.
std::int64_t checkpoint_step(const std::string& filename);
/// The checkpoints in `dir` (a run's checkpoints/ folder), oldest first: ordered by the step number in the name,
/// so step 1,000,000,000 comes after step 999,999,999 (temporaries and other files are left out).
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& dir);

class RunDir {
 public:
  /// Opens (creates, replaces or reopens) and locks the run directory. Throws qkv::Error when the mode does not
  /// fit what is there, when it is not a qkv run directory, or when another process holds its lock.
  RunDir(const std::filesystem::path& dir, RunDirMode mode);
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  /// Throws WriteError when the directory was deleted or moved since it was opened (a run must then stop).
  void check_present() const;
  /// What opening it changed, for the log: "replaced ...", "reused ...", "removed N stale temporary files"; or "".
  const std::string& note() const { return note_; }

 private:
  void lock();
  void clear_contents();  // everything but the marker (its lock stays held)
  void remove_stale_temporaries();
  std::filesystem::path path_;
  int lock_fd_ = -1;
  std::string note_;
};

}  // namespace qkv
