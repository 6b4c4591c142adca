#!/usr/bin/env bash
# Smoke run with non-Rust clients against a fresh warren on an ephemeral port: rabbitmq-c's
# amqp-tools (C) and pika (Python). Catches what a Rust-only test suite cannot see.
# Usage: interop/smoke.sh            (builds and starts warren itself)
#        interop/smoke.sh --broker amqp://user:pass@host:port   (uses a running broker)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

broker=""
if [ "${1:-}" = "--broker" ]; then broker="$2"; fi

venv="${WARREN_INTEROP_VENV:-$root/target/interop-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q -r "$here/python/requirements.txt"

pid=""
data=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  if [ -n "$data" ]; then rm -rf "$data"; fi
}
trap cleanup EXIT

if [ -z "$broker" ]; then
  (cd "$root" && cargo build -q -p warren)
  data="$(mktemp -d)"
  log="$data/warren.log"
  "$root/target/debug/warren" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 --data-dir "$data/d" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$log" 2>/dev/null && break
    sleep 0.1
  done
  addr="$(grep -o 'listening on [0-9.:]*' "$log" | head -1 | awk '{print $3}')"
  [ -n "$addr" ] || { echo "warren did not start"; cat "$log"; exit 1; }
  broker="amqp://guest:guest@$addr"
fi

passed=0
failed=0
check() {
  local name="$1"; shift
  if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

q="smoke-c-$$"
amqp_c() {
  amqp-declare-queue -u "$broker" -q "$q" >/dev/null &&
    amqp-publish -u "$broker" -r "$q" -b "hello from C" &&
    [ "$(amqp-get -u "$broker" -q "$q")" = "hello from C" ] &&
    ! amqp-get -u "$broker" -q "$q" >/dev/null 2>&1 &&
    amqp-delete-queue -u "$broker" -q "$q" >/dev/null
}
check "amqp-tools (rabbitmq-c): declare, publish, get, get-empty, delete" amqp_c
check "pika (python): scenarios" "$venv/bin/python" "$here/python/smoke.py" "$broker/%2F"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
