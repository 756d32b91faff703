#pragma once
// qkv report: one self-contained HTML page (inline SVG and CSS, a few lines of inline script for hover read-outs,
// nothing fetched) showing a run's curves from metrics.jsonl, its resolved config, the model summary, the
// attention of every layer and head on one validation example and, for text models, a sample. Several runs
// are overlaid in one set of charts.
#include <string>
#include <vector>

namespace qkv {

/// The page for these run directories (the first names the page). Throws qkv::Error for a directory that is
/// not a qkv run (no metrics.jsonl and no config.toml).
std::string render_report(const std::vector<std::string>& run_dirs);

/// Writes render_report atomically to `out` ("" = FIRST_RUN_DIR/report.html) and returns the path written.
std::string write_report(const std::vector<std::string>& run_dirs, const std::string& out = "");

}  // namespace qkv
