#!/usr/bin/env bash
# Real applications against a broker, as their users run them: a Celery worker (remote control
# ping and inspect, events, a task round trip through the rpc result backend, a countdown, a
# retry, priorities) and Dramatiq (priorities, a message, a delayed message, a failing actor's
# message in its dead-letter queue). Their queue declarations use x-message-ttl, x-expires,
# x-max-priority and x-dead-letter-exchange.
#
# Usage: interop/frameworks/run.sh [--broker amqp://user:pass@host:port] [--no-build]
#   --broker    use that broker (vhost "/") instead of starting a fresh warren
#   --no-build  do not run `cargo build -p warren` (uses target/debug/warren as it is)
# Installs celery and dramatiq (requirements.txt) into target/frameworks-venv from PyPI.
# Prints PASS / FAIL per check; exits 1 on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
broker=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
  --broker) broker="$2"; shift 2 ;;
  --no-build) build=0; shift ;;
  -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { echo "== $*" >&2; }

venv="$root/target/frameworks-venv"
if ! "$venv/bin/python" -c 'import celery, dramatiq, pika' 2>/dev/null; then
  log "creating $venv (celery, dramatiq)"
  python3 -m venv "$venv" || exit 2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" || exit 2
fi

# shellcheck source=../warren.sh
. "$root/interop/warren.sh"
data=""
cleanup() {
  stop_warren
  if [ -n "$data" ]; then rm -rf "$data"; fi
}
trap cleanup EXIT
if [ -z "$broker" ]; then
  if [ "$build" = 1 ]; then (cd "$root" && cargo build -q -p warren) || exit 2; fi
  data="$(mktemp -d)"
  start_warren "$data"
  addr="$WARREN_AMQP"
  broker="amqp://guest:guest@$addr"
  log "warren listening on $addr"
fi
broker="${broker%/}"

failed=0
log "celery"
(cd "$here" && BROKER_URL="$broker//" timeout 300 "$venv/bin/python" celery_check.py) || failed=1
log "dramatiq"
(cd "$here" && BROKER_URL="$broker/%2F" DRAMATIQ_CHECK_LOG="$(mktemp)" timeout 300 "$venv/bin/python" dramatiq_check.py) || failed=1
if [ "$failed" = 0 ]; then log "frameworks: all checks passed"; else log "frameworks: FAILED"; fi
exit "$failed"
