#!/usr/bin/env bash
# Render a medlite report.html to PNG in headless Chromium, to look at it as a person would.
# Usage: scripts/render_report.sh REPORT.html OUT.png [HEIGHT]   (the window's height in pixels, default 2200)
# Needs Debian's chromium (apt-get install chromium). The page needs no network: figures are embedded.
set -euo pipefail
html=$(realpath "$1")
out=$(realpath -m "$2")
height=${3:-2200}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "no Chromium found: apt-get install chromium" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1280,$height --screenshot="$out" "file://$html" 2>"$profile/chromium.log"
# Chromium prints nothing useful on success; a console error in the page would be logged here.
if grep -iE "Uncaught|ERROR:.*(console|javascript)" "$profile/chromium.log"; then
  echo "the page logged errors" >&2
  exit 1
fi
echo "$out"
