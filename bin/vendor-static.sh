#!/usr/bin/env bash
# The browser libraries the dashboard serves as its own static files (no CDN; docs/dashboard.md#reports):
# npm ci installs package-lock.json's exact versions into node_modules/, then the files the pages load are
# copied into static/vendor/ (gitignored), where STATICFILES_DIRS (static/) finds them for whitenoise and
# collectstatic. Only the listed files are served, not node_modules. `make setup` runs it when
# package.json, package-lock.json or this script change; the Dockerfile's assets stage runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then  # Debian's Node.js and npm, as bin/ensure-browser.sh installs Chromium
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error

# node_modules/<path> → static/vendor/<file>. The source map goes along: the manifest storage of the
# production profile follows the sourceMappingURL comment at collectstatic and fails if the map is missing.
FILES=(
  chart.js/dist/chart.umd.min.js
  chart.js/dist/chart.umd.min.js.map
  @xterm/xterm/lib/xterm.js
  @xterm/xterm/lib/xterm.js.map
  @xterm/xterm/css/xterm.css
  @xterm/addon-fit/lib/addon-fit.js
  @xterm/addon-fit/lib/addon-fit.js.map
)
mkdir -p static/vendor
for file in "${FILES[@]}"; do
  cp "node_modules/$file" static/vendor/
done
