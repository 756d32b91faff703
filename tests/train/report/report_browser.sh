#!/usr/bin/env bash
# ctest: a short sort run's report loads in headless Chromium with no console errors (skipped, 77, without
# Chromium). Usage: report_browser.sh QKV_BINARY WORK_DIR SOURCE_DIR
set -euo pipefail
rm -rf "$2" && mkdir -p "$2"
"$1" train "$3/configs/sort.toml" "run.out_dir=\"$2\"" train.steps=30 schedule.warmup_steps=0 --force >/dev/null 2>&1
exec "$3/tools/check_report_browser.sh" "$2/sort/report.html" "$2/report.png"
