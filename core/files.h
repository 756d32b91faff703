#pragma once
// Files, below everything that reads or writes them: the one rule for naming temporary files (every file qkv
// replaces, run outputs and the GEMM cache, is written to a temporary file beside it and then renamed or linked
// over it, so a reader never sees half a file), and the one rule for reading an input (a config, a data file, a
// model file): only a regular file of bounded size, never blocking on a FIFO or reading an endless device.

#include <cstdint>
#include <filesystem>
#include <string>

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

}  // namespace qkv
