#!/usr/bin/env bash
# The management web UI in a real headless browser: Debian's chromium and chromedriver
# (installed with apt-get if missing), selenium from PyPI into target/ui-venv, a fresh warren,
# and check.py walking through it (log in, create a queue, publish, watch the count, get the
# message, delete the queue, open every page). Screenshots: target/ui-screenshots/.
#
# Usage: interop/ui/run.sh [--no-build]
# Prints PASS / FAIL per check; exits 1 on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build=1
[ "${1:-}" = "--no-build" ] && build=0
log() { echo "== $*" >&2; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  log "installing chromium and chromium-driver"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >&2 || exit 2
fi
venv="$root/target/ui-venv"
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  log "creating $venv (selenium)"
  python3 -m venv "$venv" || exit 2
  "$venv/bin/pip" install -q --disable-pip-version-check 'selenium==4.27.1' || exit 2
fi
if [ "$build" = 1 ]; then (cd "$root" && cargo build -q -p warren) || exit 2; fi

data="$(mktemp -d)"
# shellcheck source=../warren.sh
. "$root/interop/warren.sh"
cleanup() {
  stop_warren
  rm -rf "$data"
}
trap cleanup EXIT
start_warren "$data"
api="$WARREN_API"
log "broker: warren, management UI on http://$api/"
shots="$root/target/ui-screenshots"
rm -rf "$shots"
"$venv/bin/python" "$here/check.py" "http://$api" "$shots"
