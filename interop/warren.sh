# Sourced by the interop scripts: starts a throw-away warren and stops it on exit.
#
# start_warren DIR: runs ${WARREN_BIN:-$root/target/debug/warren} on free loopback ports
# (AMQP, management API, Prometheus) with its data in DIR/data and its log in DIR/warren.log,
# waits up to 30 s for "listening on", and sets WARREN_PID, WARREN_AMQP (host:port) and
# WARREN_API (host:port of the management API). Exits 2, with the log, if it does not start.
# The caller's EXIT trap should call stop_warren.

WARREN_PID=""

start_warren() {
  local dir=$1
  "${WARREN_BIN:-$root/target/debug/warren}" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 \
    --prometheus-listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/warren.log" 2>&1 &
  WARREN_PID=$!
  WARREN_AMQP=""
  for _ in $(seq 1 300); do
    WARREN_AMQP="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$dir/warren.log" | head -1)"
    [ -n "$WARREN_AMQP" ] && break
    sleep 0.1
  done
  WARREN_API="$(sed -n 's|.*management API on http://||p' "$dir/warren.log" | head -1)"
  if [ -z "$WARREN_AMQP" ] || [ -z "$WARREN_API" ]; then
    cat "$dir/warren.log" >&2
    echo "warren did not start" >&2
    exit 2
  fi
}

stop_warren() {
  if [ -n "$WARREN_PID" ]; then kill "$WARREN_PID" 2>/dev/null; wait "$WARREN_PID" 2>/dev/null; fi
}
