#!/usr/bin/env bash
# The management API against RabbitMQ's:
# 1. RabbitMQ's own rabbitmqadmin (the management plugin's Python CLI, shipped with Debian's
#    rabbitmq-server package): it declares, lists, publishes, gets, binds, manages users and
#    permissions, exports and imports definitions, as its users type it. The same checks pass
#    against RabbitMQ 3.10.8 with the management plugin (--api HOST:PORT).
# 2. conformance.py: 57 requests, their status codes and JSON keys compared with RabbitMQ
#    3.10.8's answers to the same requests (rabbitmq-3.10.8.json, recorded with --record).
#
# Usage: interop/management/run.sh [--api HOST:PORT --amqp HOST:PORT] [--no-build]
#   --api       use that management API (guest/guest) instead of starting a fresh warren
#   --amqp      its AMQP port (for the conformance walk's consumer)
#   --no-build  do not run `cargo build -p warren` (uses target/debug/warren as it is)
# rabbitmqadmin: $RABBITMQADMIN, or on the PATH, or taken out of Debian's rabbitmq-server
# package (`apt-get download`, no install) into target/rabbitmqadmin.
# Prints PASS / FAIL per check; exits 1 on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
api=""
amqp=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
  --api) api="$2"; shift 2 ;;
  --amqp) amqp="$2"; shift 2 ;;
  --no-build) build=0; shift ;;
  -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
log() { echo "== $*" >&2; }

admin="${RABBITMQADMIN:-$(command -v rabbitmqadmin || true)}"
if [ -z "$admin" ]; then
  admin="$root/target/rabbitmqadmin/usr/bin/rabbitmqadmin"
  if [ ! -f "$admin" ]; then
    log "fetching rabbitmqadmin from Debian's rabbitmq-server package"
    work="$(mktemp -d)"
    (cd "$work" && { apt-get download -qq rabbitmq-server 2>/dev/null ||
      { apt-get update -qq && apt-get download -qq rabbitmq-server; }; }) >&2 || exit 2
    mkdir -p "$root/target/rabbitmqadmin"
    dpkg-deb -x "$work"/rabbitmq-server_*.deb "$root/target/rabbitmqadmin" || exit 2
    rm -rf "$work"
  fi
fi
[ -f "$admin" ] || { echo "no rabbitmqadmin" >&2; exit 2; }

# shellcheck source=../warren.sh
. "$root/interop/warren.sh"
data=""
cleanup() {
  stop_warren
  if [ -n "$data" ]; then rm -rf "$data"; fi
}
trap cleanup EXIT
if [ -z "$api" ]; then
  if [ "$build" = 1 ]; then (cd "$root" && cargo build -q -p warren) || exit 2; fi
  data="$(mktemp -d)"
  start_warren "$data"
  api="$WARREN_API"
  amqp="$WARREN_AMQP"
  log "broker: warren, management API on $api"
fi
host="${api%:*}"
port="${api##*:}"
adm() { python3 "$admin" -H "$host" -P "$port" -u guest -p guest "$@" 2>&1; }

failed=0
check() { # NAME EXPECTED-SUBSTRING COMMAND...
  local name="$1" want="$2"
  shift 2
  local out
  # RabbitMQ's figures lag by up to its 5 s stats interval: a few tries.
  for _ in 1 2 3 4 5 6 7 8; do
    out="$("$@")"
    [[ "$out" == *"$want"* ]] && break
    [[ "$name" == *shows* ]] || break
    sleep 1
  done
  if [[ "$out" == *"$want"* ]]; then
    echo "PASS $name"
  else
    echo "FAIL $name: wanted '$want' in:"
    echo "$out" | sed 's/^/    /'
    failed=1
  fi
}

defs="$(mktemp)"
check "declare queue" "queue declared" adm declare queue name=adm-q durable=true
check "list queues" "adm-q" adm list queues name messages
check "publish" "Message published" adm publish routing_key=adm-q payload=hello
queue_row() { adm list queues name messages | grep ' adm-q '; }
check "list queues shows the message" "| 1 " queue_row
check "get" "hello" adm get queue=adm-q ackmode=ack_requeue_false
check "declare exchange" "exchange declared" adm declare exchange name=adm-x type=topic
check "declare binding" "binding declared" adm declare binding source=adm-x destination=adm-q routing_key='a.#'
check "list bindings" "a.#" adm list bindings source destination routing_key
check "publish through the exchange" "Message published" adm publish exchange=adm-x routing_key=a.b payload=routed
check "get the routed message" "routed" adm get queue=adm-q ackmode=ack_requeue_false
check "declare user" "user declared" adm declare user name=adm-u password=pw tags=management
check "declare permission" "permission declared" adm declare permission vhost=/ user=adm-u configure='.*' write='.*' read='.*'
check "list users" "adm-u" adm list users name tags
check "list permissions" "adm-u" adm list permissions user vhost
check "show overview" "3.10.8" adm show overview
check "export definitions" "Exported definitions" adm export "$defs"
check "export holds the queue" "adm-q" cat "$defs"
check "import definitions" "Uploaded definitions" adm import "$defs"
check "delete binding" "binding deleted" adm delete binding source=adm-x destination_type=queue destination=adm-q properties_key='a.%23'
check "delete queue" "queue deleted" adm delete queue name=adm-q
check "delete exchange" "exchange deleted" adm delete exchange name=adm-x
check "delete user" "user deleted" adm delete user name=adm-u
rm -f "$defs"

if [ -n "$amqp" ]; then
  py="$root/target/interop-venv/bin/python"
  if ! "$py" -c 'import pika' 2>/dev/null; then
    py="$root/target/management-venv/bin/python"
    if ! "$py" -c 'import pika' 2>/dev/null; then
      log "creating target/management-venv (pika)"
      python3 -m venv "$root/target/management-venv" >&2 || exit 2
      "$root/target/management-venv/bin/pip" install -q --disable-pip-version-check pika==1.3.2 >&2 || exit 2
    fi
  fi
  log "conformance: the same requests as RabbitMQ 3.10.8's recorded answers"
  "$py" "$here/conformance.py" --compare "$here/rabbitmq-3.10.8.json" --api "$api" --amqp "$amqp" ||
    failed=1
fi
exit "$failed"
