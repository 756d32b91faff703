#!/usr/bin/env bash
# Loads a qkv report in headless Chromium (Debian's package `chromium`), fails on any console error or uncaught
# exception, and writes a screenshot. Usage: tools/check_report_browser.sh REPORT.html [SCREENSHOT.png [WIDTHxHEIGHT]]
# Exits 77 (skipped, for ctest) when Chromium is not installed: apt-get install chromium
set -euo pipefail
page=$(realpath "$1")
shot=${2:-}
size=${3:-1320,1500}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium is not installed (apt-get install chromium): skipped"; exit 77; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# The flags a sandboxed root session needs, and no background networking (this page needs none).
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars)
log=$(timeout 120 "$browser" "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$page" 2>&1 >"$profile/dom.html")
if grep -E "CONSOLE.*(Uncaught|Error|error)" <<<"$log"; then
  echo "FAIL: console errors in $page"
  exit 1
fi
grep -q "</html>" "$profile/dom.html" || { echo "FAIL: the page did not load"; exit 1; }
if [ -n "$shot" ]; then
  timeout 120 "$browser" "${flags[@]}" --window-size="$size" --screenshot="$(realpath -m "$shot")" "file://$page" >/dev/null 2>&1
  [ -s "$shot" ] || { echo "FAIL: no screenshot"; exit 1; }
fi
echo "browser check ok: $page loaded with no console errors${shot:+, screenshot $shot}"
