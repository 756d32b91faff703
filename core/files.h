#pragma once
// The one rule for naming temporary files: every file qkv replaces (run outputs, the GEMM cache) is written to a
// temporary file beside it and then renamed or linked over it, so a reader never sees half a file.

#include <filesystem>
#include <string>

namespace qkv {

/// DIR/.NAME.tmp.PID for DIR/NAME: in the target's folder (so the rename stays on one filesystem), hidden, and
/// unique to this process.
std::string temporary_path(const std::filesystem::path& target);
/// True for a name temporary_path makes (what an interrupted write leaves; a run directory may remove them).
bool is_temporary_name(const std::string& file_name);

}  // namespace qkv
