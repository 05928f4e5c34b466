#!/usr/bin/env bash
# Debian's nginx (the proxy in front of the application servers, bin/serve proxy) and envsubst (which fills
# in its template): installed when missing. Idempotent.
set -euo pipefail
missing=()
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx-light)
command -v envsubst >/dev/null 2>&1 || missing+=(gettext-base)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package may start its own server on port 80 where an init system runs it: LabManager starts its own.
if [ -f /run/nginx.pid ]; then $SUDO /usr/sbin/nginx -s quit 2>/dev/null || true; fi
