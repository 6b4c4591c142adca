#!/usr/bin/env bash
# warren interop scenarios for rabbitmq-c, through Debian's amqp-tools command line programs
# (amqp-declare-queue, amqp-publish, amqp-consume, amqp-get, amqp-delete-queue).
#
# Usage: interop.sh MODE      MODE = scenarios | cross-publish | cross-consume
# Environment: AMQP_URL (amqp://user:pass@host:port), INTEROP_CLIENTS, INTEROP_EXPECTED,
# INTEROP_ONLY. Prints "PASS name" / "FAIL name: reason" / "NA name: reason".
# The tools cannot declare exchanges, nack, reject, purge, confirm, return, run transactions or
# pass binding arguments: those scenarios are NA. The cross-client consumer sees the body only.
set -uo pipefail

ME=c
here="$(cd "$(dirname "$0")" && pwd)"
URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}"
URL="${URL%/}"
EXPECTED="${INTEROP_EXPECTED:-$here/../cross/expected.json}"
CLIENTS="${INTEROP_CLIENTS:-python node c ruby php}"
ONLY=" ${INTEROP_ONLY:-} "
PY="${INTEROP_PYTHON:-python3}" # only to read expected.json

work="$(mktemp -d "${TMPDIR:-/tmp}/interop-c.XXXXXX")"
bg=()
cleanup() {
  local p
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

q() { echo "it.$ME.$1"; }
t() { timeout 20 "$@"; } # every tool call is bounded

declare_q() { t amqp-declare-queue -u "$URL" -q "$1" >/dev/null; }
delete_q() { t amqp-delete-queue -u "$URL" -q "$1" 2>/dev/null; } # prints the message count
publish() { t amqp-publish -u "$URL" -r "$1" -b "$2"; }
get() { t amqp-get -u "$URL" -q "$1"; }

# Waits up to $1 seconds for the command in "${@:2}" to succeed.
wait_for() {
  local secs="$1"; shift
  local end=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.1
  done
}

fail() { echo "$1" >"$work/reason"; return 1; }

run() {
  local name="$1" fn="$2"
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
  local start=$SECONDS
  rm -f "$work/reason"
  if "$fn" 2>"$work/stderr"; then
    echo "PASS $name"
  else
    local reason
    reason="$(cat "$work/reason" 2>/dev/null || true)"
    [ -n "$reason" ] || reason="$(tr '\n' ' ' <"$work/stderr" | cut -c1-300)"
    echo "FAIL $name: ${reason:-failed}"
    sed "s/^/[$ME] /" "$work/stderr" >&2
  fi
  echo "[$ME] $name: $((SECONDS - start))s" >&2
}

na() {
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $1 "* ]]; then return; fi
  echo "NA $1: $2"
}

# ---------------------------------------------------------------------------------------------

s_connect_ok() {
  local name
  name="$(t amqp-declare-queue -u "$URL" -q "")" || fail "amqp-declare-queue failed" || return
  [ "$(delete_q "$name")" = 0 ] || fail "could not delete $name"
}

s_connect_bad() {
  local bad err rc
  bad="$(echo "$URL" | sed -E 's#^(amqp://[^:/@]*):[^@]*@#\1:wrong-password@#')"
  err="$(t amqp-get -u "$bad" -q "$(q nothing)" 2>&1)"
  rc=$?
  [ "$rc" -ne 0 ] || fail "connection succeeded with a wrong password" || return
  # rabbitmq-c: "logging in to AMQP server: server connection error 403, message: ACCESS_REFUSED - ..."
  [[ "$err" == *"server connection error 403, message: ACCESS_REFUSED"* ]] || fail "error: $err"
}

s_declare_queue() {
  local name out
  name="$(q declare)"
  delete_q "$name" >/dev/null
  out="$(t amqp-declare-queue -u "$URL" -q "$name")" || fail "declare failed" || return
  [ "$out" = "$name" ] || fail "declare printed '$out'" || return
  out="$(t amqp-declare-queue -u "$URL" -q "$name")" || fail "redeclare failed" || return
  [ "$(delete_q "$name")" = 0 ] || fail "delete count"
}

s_bind() {
  # amqp-consume -q Q -e EX -r KEY declares Q (auto-delete) and binds it before consuming.
  local name
  name="$(q bind)"
  delete_q "$name" >/dev/null
  timeout 15 amqp-consume -u "$URL" -q "$name" -e amq.direct -r "$name.k1" -c 1 -- cat >"$work/bind.out" &
  local pid=$!
  bg+=("$pid")
  sleep 1 # let it bind: the tools give no other signal
  t amqp-publish -u "$URL" -e amq.direct -r "$name.k2" -b two
  t amqp-publish -u "$URL" -e amq.direct -r "$name.k1" -b one
  wait "$pid" || fail "amqp-consume failed" || return
  [ "$(cat "$work/bind.out")" = one ] || fail "consumer got '$(cat "$work/bind.out")'" || return
  # its only consumer gone, the auto-delete queue went with its binding
  local err
  err="$(t amqp-get -u "$URL" -q "$name" 2>&1)"
  [[ "$err" == *"server channel error 404, message: NOT_FOUND"* ]] || fail "auto-delete queue still there: $err"
}

s_publish_consume_ack() {
  local name
  name="$(q pca)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  for i in 0 1 2; do publish "$name" "m$i"; done
  # without -A (no-ack), amqp-consume acks each message after the command has run
  timeout 15 amqp-consume -u "$URL" -q "$name" -c 3 -- sh -c 'cat; echo' >"$work/pca.out" ||
    fail "amqp-consume failed" || return
  [ "$(tr '\n' ' ' <"$work/pca.out")" = "m0 m1 m2 " ] || fail "got $(tr '\n' ' ' <"$work/pca.out")" || return
  local n
  n="$(delete_q "$name")"
  [ "$n" = 0 ] || fail "$n messages left after acks"
}

s_get_full() {
  local name
  name="$(q getfull)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  for i in 0 1 2; do publish "$name" "g$i"; done
  [ "$(get "$name")" = g0 ] || fail "first get" || return
  local n
  n="$(delete_q "$name")"
  [ "$n" = 2 ] || fail "$n left, expected 2"
}

s_get_empty() {
  local name rc
  name="$(q getempty)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  get "$name" >"$work/empty.out" 2>&1
  rc=$?
  # amqp-get exits 2 with no output on basic.get-empty
  [ "$rc" = 2 ] && [ ! -s "$work/empty.out" ] || fail "amqp-get rc=$rc output $(cat "$work/empty.out")" || return
  delete_q "$name" >/dev/null
}

s_prefetch() {
  # A consumer with prefetch 2 whose command blocks on the first message holds exactly 2
  # messages; the other 3 are still there for basic.get.
  local name
  name="$(q prefetch)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  for i in 0 1 2 3 4; do publish "$name" "p$i"; done
  rm -f "$work/release" "$work/prefetch.out"
  timeout 30 amqp-consume -u "$URL" -q "$name" -p 2 -c 5 -- \
    sh -c "cat >>'$work/prefetch.out'; echo >>'$work/prefetch.out'; while [ ! -e '$work/release' ]; do sleep 0.05; done" &
  local pid=$!
  bg+=("$pid")
  wait_for 10 test -s "$work/prefetch.out" || fail "consumer got nothing" || return
  sleep 0.5
  local got=()
  for _ in 1 2 3 4; do
    local b
    b="$(get "$name")" && got+=("$b")
  done
  touch "$work/release"
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  [ "${got[*]}" = "p2 p3 p4" ] || fail "basic.get beside a prefetch-2 consumer got '${got[*]}', expected 'p2 p3 p4'" || return
  delete_q "$name" >/dev/null
}

s_exclusive_locked() {
  local name err
  name="$(q exclusive)"
  rm -f "$work/excl.out"
  # -x declares the named queue exclusive to amqp-consume's connection
  timeout 20 amqp-consume -u "$URL" -q "$name" -x -c 1 -- cat >"$work/excl.out" 2>"$work/excl.err" &
  local pid=$!
  bg+=("$pid")
  locked() {
    err="$(t amqp-get -u "$URL" -q "$name" 2>&1)"
    [[ "$err" == *"server channel error 405, message: RESOURCE_LOCKED"* ]]
  }
  wait_for 10 locked || fail "basic.get from another connection: $err" || return
  if err="$(t amqp-declare-queue -u "$URL" -q "$name" 2>&1)"; then
    fail "declare from another connection succeeded"
    return
  fi
  [[ "$err" == *"server channel error 405, message: RESOURCE_LOCKED"* ]] || fail "declare: $err" || return
  publish "$name" bye
  wait "$pid" || fail "exclusive consumer failed: $(cat "$work/excl.err")" || return
  [ "$(cat "$work/excl.out")" = bye ] || fail "consumer got '$(cat "$work/excl.out")'" || return
  # its connection is gone, and the queue with it
  err="$(t amqp-get -u "$URL" -q "$name" 2>&1)"
  [[ "$err" == *"server channel error 404, message: NOT_FOUND"* ]] || fail "after owner left: $err"
}

s_server_named() {
  local name
  name="$(t amqp-declare-queue -u "$URL" -q "")" || return
  [[ "$name" == amq.gen-* ]] || fail "name '$name'" || return
  publish "$name" "to a generated name"
  [ "$(get "$name")" = "to a generated name" ] || fail "get" || return
  delete_q "$name" >/dev/null
}

s_delete_count() {
  local name n
  name="$(q delete)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  for i in 1 2 3 4; do publish "$name" x; done
  n="$(delete_q "$name")"
  [ "$n" = 4 ] || fail "delete-ok message_count $n"
}

s_large() {
  local name
  name="$(q large)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  head -c $((10 * 1024 * 1024)) /dev/urandom >"$work/large.in"
  t amqp-publish -u "$URL" -r "$name" <"$work/large.in" || fail "publish failed" || return
  wait_for 5 sh -c "timeout 20 amqp-get -u '$URL' -q '$name' >'$work/large.out'" || fail "no message" || return
  cmp -s "$work/large.in" "$work/large.out" || fail "body differs ($(stat -c %s "$work/large.out") bytes)" || return
  delete_q "$name" >/dev/null
}

s_topic() {
  # bindings made by amqp-consume -e amq.topic -r PATTERN (which declares its queue auto-delete);
  # patterns and keys get a first word "it-c" so that they only meet each other on amq.topic.
  # The other clients' table without the empty key and the "" binding (a prefix changes those).
  local -A pat=([q1]='a.*.c' [q2]='a.#' [q3]='*.b' [q4]='#.c' [q5]='#' [q6]='a.#.c' [q7]='*')
  local -A want=([q1]='a.b.c a..c' [q2]='a.b.c a a.b a.b.c.d a.x.y.c a..c a.c' [q3]='a.b x.b'
    [q4]='a.b.c c a.x.y.c a..c a.c' [q5]='a.b.c a a.b x.b a.b.c.d c x.y a.x.y.c a..c a.c'
    [q6]='a.b.c a.x.y.c a..c a.c' [q7]='a c')
  local k pids=()
  for k in q1 q2 q3 q4 q5 q6 q7; do
    delete_q "$(q "topic.$k")" >/dev/null
    timeout 15 amqp-consume -u "$URL" -q "$(q "topic.$k")" -e amq.topic -r "it-c.${pat[$k]}" -- \
      sh -c 'cat; echo' >"$work/topic.$k" &
    pids+=($!)
    bg+=($!)
  done
  sleep 1 # let them bind
  for key in a.b.c a a.b x.b a.b.c.d c x.y a.x.y.c a..c a.c; do
    t amqp-publish -u "$URL" -e amq.topic -r "it-c.$key" -b "$key"
  done
  sleep 1.5 # then every consumer should have what its pattern matches, and nothing more
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for k in q1 q2 q3 q4 q5 q6 q7; do
    local got
    got="$(tr '\n' ' ' <"$work/topic.$k")"
    [ "$got" = "${want[$k]} " ] || fail "${pat[$k]} got '$got', expected '${want[$k]}'" || return
  done
}

s_heartbeat() {
  local name
  name="$(q heartbeat)"
  delete_q "$name" >/dev/null
  declare_q "$name" || return
  timeout 20 amqp-consume -u "$URL" --heartbeat=1 -q "$name" -c 1 -- cat >"$work/hb.out" 2>"$work/hb.err" &
  local pid=$!
  bg+=("$pid")
  sleep 5 # idle: only heartbeats on amqp-consume's connection
  kill -0 "$pid" 2>/dev/null || fail "consumer died while idle: $(cat "$work/hb.err")" || return
  publish "$name" alive
  wait "$pid" || fail "consumer failed: $(cat "$work/hb.err")" || return
  [ "$(cat "$work/hb.out")" = alive ] || fail "got '$(cat "$work/hb.out")'" || return
  delete_q "$name" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Cross-client

# Prints one field of publishers.c (or of another publisher) from expected.json.
expected() {
  "$PY" - "$EXPECTED" "$@" <<'EOF'
import json, sys
exp = json.load(open(sys.argv[1], encoding="utf-8"))
pub, what = sys.argv[2], sys.argv[3]
p = exp["publishers"][pub]
if what == "body":
    sys.stdout.buffer.write(p["body"].encode())
elif what == "args":
    # amqp-publish arguments for the properties and headers, one per line
    flags = {"content_type": "-C", "content_encoding": "-E", "reply_to": "-t"}
    for k, v in p["properties"].items():
        if k == "delivery_mode":
            assert v == 2, "amqp-publish can only set delivery_mode 2 (-p)"
            print("-p")
        else:
            print(flags[k]); print(v)
    for k, (tag, v) in p["headers"].items():
        assert tag == "S", "amqp-publish can only send string headers"
        print("-H"); print(f"{k}: {v}")
EOF
}

cross_publish() {
  local args=() consumer name
  mapfile -t args < <(expected "$ME" args) || return
  [ "${#args[@]}" -gt 0 ] || fail "cannot read $EXPECTED" || return
  expected "$ME" body >"$work/xc.body"
  for consumer in $CLIENTS; do
    name="xc.$ME.$consumer"
    delete_q "$name" >/dev/null
    declare_q "$name" || return
    t amqp-publish -u "$URL" -r "$name" "${args[@]}" <"$work/xc.body" || fail "publish to $name failed" || return
  done
}

cross_consume() {
  local pub name qn
  for pub in $CLIENTS; do
    name="cross-from-$pub"
    qn="xc.$pub.$ME"
    expected "$pub" body >"$work/xc.want"
    if ! get "$qn" >"$work/xc.got" 2>"$work/xc.err"; then
      echo "FAIL $name: no message in $qn $(tr '\n' ' ' <"$work/xc.err")"
    elif ! cmp -s "$work/xc.want" "$work/xc.got"; then
      echo "FAIL $name: body differs: $(head -c 200 "$work/xc.got")"
    elif get "$qn" >/dev/null 2>&1; then
      echo "FAIL $name: more than one message"
    else
      echo "PASS $name"
    fi
    delete_q "$qn" >/dev/null
  done
}

mode="${1:-scenarios}"
case "$mode" in
scenarios)
  run connect-ok s_connect_ok
  run connect-bad-credentials s_connect_bad
  for k in direct fanout topic headers; do
    na "declare-exchange-$k" "amqp-tools have no exchange.declare command"
  done
  run declare-queue s_declare_queue
  run bind s_bind
  run publish-consume-ack s_publish_consume_ack
  na nack-requeue "amqp-consume can only ack (or consume with no-ack)"
  na reject-discard "amqp-consume can only ack (or consume with no-ack)"
  run get-full s_get_full
  run get-empty s_get_empty
  run prefetch s_prefetch
  na confirms-10k "amqp-publish has no publisher-confirm mode"
  na mandatory-return "amqp-publish has no mandatory flag"
  run exclusive-locked s_exclusive_locked
  run server-named-queue s_server_named
  na purge-count "amqp-tools have no queue.purge command"
  run delete-count s_delete_count
  na tx-commit "amqp-tools have no transactions"
  na tx-rollback "amqp-tools have no transactions"
  run large-message-10mib s_large
  run topic-routing s_topic
  na headers-all "amqp-consume cannot pass binding arguments"
  na headers-any "amqp-consume cannot pass binding arguments"
  run heartbeat s_heartbeat
  na consumer-cancel-notify "rabbitmq-c does not advertise consumer_cancel_notify, so the broker cancels silently and amqp-consume keeps waiting"
  ;;
cross-publish) ONLY="  " run cross-publish cross_publish ;;
cross-consume) cross_consume ;;
*)
  echo "unknown mode $mode" >&2
  exit 2
  ;;
esac
exit 0
