#!/usr/bin/env bash
# Runs lapin's own live-broker test suite and examples, exactly as published on crates.io
# (lapin 4.12.3: its tests/ and examples/), against the broker at $AMQP_ADDR.
#
# Usage: AMQP_ADDR=amqp://127.0.0.1:5672/%2f interop/lapin/run.sh
#
# Prints one line per test function and per example: "PASS name" / "FAIL name" (or
# "SKIP name"), then "N passed, M failed[, K skipped]"; exits non-zero if anything failed.
#
# Nothing is downloaded except crates from crates.io, by cargo. The crate is fetched into the
# cargo registry ($CARGO_HOME, default ~/.cargo) through a throw-away project depending on
# lapin =4.12.3, copied out, and built with its published Cargo.lock (--locked) and without
# TLS: --no-default-features --features tokio,smol,async-global-executor (pure-Rust runtimes
# only; the default `rustls` feature would build aws-lc's C code).
#
# Knobs (environment):
#   AMQP_ADDR               broker URI                    (amqp://127.0.0.1:5672/%2f)
#   LAPIN_VERSION           lapin version to test         (4.12.3)
#   LAPIN_FEATURES          cargo features                (tokio,smol,async-global-executor)
#   LAPIN_TARGET_DIR        cargo target dir, reusable    (${TMPDIR:-/tmp}/lapin-interop-target)
#   LAPIN_JOBS              cargo -j                      (cargo's default)
#   LAPIN_SKIP              names to skip, space-separated, e.g. "example:pubsub"
#   LAPIN_TEST_TIMEOUT      seconds per test function     (120)
#   LAPIN_FOREVER_SECONDS   how long never-ending examples run before they are judged (10)
#   LAPIN_PUBSUB_TIMEOUT    seconds for example:pubsub (1.5 million publishes; ~2.5 min) (900)
#   LAPIN_KEEP_LOGS         keep the work dir with all logs (set to 1); kept anyway on failure
#
# Test names are "TESTFILE::function" (tests/TESTFILE.rs), examples are "example:NAME".
# Notes:
# - tests/conn_refused.rs expects "connection refused" from localhost:5673, whatever
#   AMQP_ADDR says. If something listens there, it is run in a private network namespace
#   (unshare -n, needs root or user namespaces, and `ip`) when possible.
# - Never-ending examples (consumers, publish loops) are run for LAPIN_FOREVER_SECONDS and pass
#   if they are still alive then, printed no panic and no ERROR line, and showed progress.
# - The examples use the durable queues "hello" and "queue_test" in the URI's vhost.
set -uo pipefail

AMQP_ADDR="${AMQP_ADDR:-amqp://127.0.0.1:5672/%2f}"
export AMQP_ADDR
version="${LAPIN_VERSION:-4.12.3}"
features="${LAPIN_FEATURES:-tokio,smol,async-global-executor}"
target_dir="${LAPIN_TARGET_DIR:-${TMPDIR:-/tmp}/lapin-interop-target}"
test_timeout="${LAPIN_TEST_TIMEOUT:-120}"
forever="${LAPIN_FOREVER_SECONDS:-10}"
pubsub_timeout="${LAPIN_PUBSUB_TIMEOUT:-900}"
skip=" ${LAPIN_SKIP:-} "
export CARGO_HOME="${CARGO_HOME:-${HOME:?neither CARGO_HOME nor HOME is set}/.cargo}"
export CARGO_TERM_COLOR=never NO_COLOR=1 RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
unset RUST_LOG # the examples pick their own level when it is unset
jobs=()
if [ -n "${LAPIN_JOBS:-}" ]; then jobs=(-j "$LAPIN_JOBS"); fi

command -v cargo >/dev/null || { echo "cargo not found" >&2; exit 2; }
command -v timeout >/dev/null || { echo "timeout (coreutils) not found" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/lapin-interop.XXXXXX")"
logs="$work/logs"
mkdir -p "$logs"
bg_pids=()
passed=0
failed=0
skipped=0
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  if [ "$failed" -eq 0 ] && [ "${LAPIN_KEEP_LOGS:-0}" != 1 ]; then
    rm -rf "$work"
  else
    echo "logs kept in $logs" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$SECONDS
log() { echo "== [$((SECONDS - start))s] $*" >&2; }

# ---------------------------------------------------------------------------------------
# 1. The published source, via cargo and crates.io only.
log "fetching lapin $version from crates.io into $CARGO_HOME"
fetcher="$work/fetch"
mkdir -p "$fetcher/src"
cat >"$fetcher/Cargo.toml" <<EOF
[package]
name = "lapin-interop-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
lapin = { version = "=$version", default-features = false }
EOF
echo 'fn main() {}' >"$fetcher/src/main.rs"
host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
fetch_args=()
if [ -n "$host" ]; then fetch_args=(--target "$host"); fi # this platform's crates only
if ! (cd "$fetcher" && cargo fetch "${fetch_args[@]}") >"$logs/fetch.log" 2>&1; then
  cat "$logs/fetch.log" >&2
  echo "cargo fetch of lapin =$version failed" >&2
  exit 2
fi
src=""
for d in "$CARGO_HOME"/registry/src/*/lapin-"$version"; do
  if [ -f "$d/Cargo.toml" ]; then src="$d"; break; fi
done
if [ -z "$src" ]; then
  # cargo fetch normally unpacks; fall back to the downloaded .crate (a gzipped tarball).
  for c in "$CARGO_HOME"/registry/cache/*/lapin-"$version".crate; do
    if [ -f "$c" ]; then tar -xzf "$c" -C "$work" && src="$work/lapin-$version"; break; fi
  done
fi
[ -n "$src" ] && [ -f "$src/Cargo.toml" ] || { echo "lapin-$version not found under $CARGO_HOME/registry" >&2; exit 2; }
# A fixed path with the registry's mtimes kept (cp -p), so a reused target dir needs no rebuild.
suite="$target_dir/src/lapin-$version"
rm -rf "$suite"
mkdir -p "$target_dir/src"
cp -Rp "$src" "$suite"
chmod -R u+w "$suite"
log "lapin source: $src"

# ---------------------------------------------------------------------------------------
# 2. Build the tests and examples; collect their executables from cargo's JSON messages.
cargo_args=(--locked --no-default-features --features "$features")
export CARGO_TARGET_DIR="$target_dir"
log "building lapin tests and examples (features: $features, target dir: $target_dir)"
artifacts="$work/artifacts.json"
if ! (cd "$suite" && cargo test "${cargo_args[@]}" "${jobs[@]}" --tests --no-run --message-format=json \
  && cargo build "${cargo_args[@]}" "${jobs[@]}" --examples --message-format=json) \
  >"$artifacts" 2>"$logs/build.log"; then
  tail -50 "$logs/build.log" >&2
  echo "building lapin's tests and examples failed" >&2
  exit 2
fi
# One "kind name executable" line per test and example binary.
exes="$(grep '"reason":"compiler-artifact"' "$artifacts" | grep '"executable":"/' |
  sed -n 's/.*"target":{"kind":\["\([a-z]*\)"\].*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2 \3/p')"
exe_of() { # kind name
  awk -v k="$1" -v n="$2" '$1 == k && $2 == n { print $3; exit }' <<<"$exes"
}

# ---------------------------------------------------------------------------------------
# 3. Helpers.
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1${2:+ ($2)}"; failed=$((failed + 1)); }
skipping() { case "$skip" in *" $1 "*) echo "SKIP $1"; skipped=$((skipped + 1)); return 0 ;; esac; return 1; }
logname() { echo "$logs/$(echo "$1" | tr -c 'A-Za-z0-9_.-' '_').log"; }
clean() { sed 's/\x1b\[[0-9;]*m//g' "$1"; } # strip ANSI colours, should any remain
# A log is clean when nothing panicked and lapin logged no ERROR.
quiet() { ! clean "$1" | grep -qE 'panicked at|^[^ ]+ +ERROR '; }

listening() { # host port: something accepts TCP connections there
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
netns_ok=""
can_netns() {
  if [ -z "$netns_ok" ]; then
    if command -v unshare >/dev/null && command -v ip >/dev/null &&
      unshare -n sh -c 'ip link set lo up' 2>/dev/null; then netns_ok=yes; else netns_ok=no; fi
  fi
  [ "$netns_ok" = yes ]
}

# ---------------------------------------------------------------------------------------
# 4. The tests: each test function on its own, in the order cargo lists them.
log "running lapin's tests against $AMQP_ADDR"
test_files="$(cd "$suite/tests" && ls -1 *.rs | sed 's/\.rs$//' | sort)"
for t in $test_files; do
  skipping "$t" && continue
  exe="$(exe_of test "$t")"
  if [ -z "$exe" ]; then
    # Not built: required-features not met, or #![cfg] left it empty.
    fail "$t" "not built with features $features"
    continue
  fi
  isolate=()
  if [ "$t" = conn_refused ] && { listening 127.0.0.1 5673 || listening ::1 5673; }; then
    if can_netns; then
      isolate=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
    else
      log "localhost:5673 is in use and no network namespace can be made: $t will fail"
    fi
  fi
  names="$(cd "$suite" && "$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p')"
  if [ -z "$names" ]; then
    fail "$t" "no test functions (cfg'd out?)"
    continue
  fi
  for fn in $names; do
    name="$t::$fn"
    skipping "$name" && continue
    out="$(logname "$name")"
    (cd "$suite" && timeout -k 5 "$test_timeout" "${isolate[@]}" "$exe" --exact "$fn" --test-threads=1) >"$out" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && grep -q "test result: ok. 1 passed" "$out"; then
      pass "$name"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      fail "$name" "timed out after ${test_timeout}s"
    else
      fail "$name" "$(clean "$out" | grep -m1 -A1 'panicked at' | tail -1 | cut -c1-200)"
    fi
  done
done

# ---------------------------------------------------------------------------------------
# 5. The examples.
log "running lapin's examples against $AMQP_ADDR"
run_example() { # name seconds -> rc; output in the example's log
  local exe out
  exe="$(exe_of example "$1")"
  out="$(logname "example:$1")"
  if [ -z "$exe" ]; then echo "no executable for example $1" >"$out"; return 127; fi
  (cd "$suite" && timeout -k 5 "$2" "$exe") >"$out" 2>&1
}
# Examples that finish on their own: exit 0 and a clean log.
finite() { # name seconds [pattern the log must show]
  local name="example:$1" out rc
  skipping "$name" && return
  run_example "$1" "$2"
  rc=$?
  out="$(logname "$name")"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    fail "$name" "did not finish within ${2}s"
  elif [ $rc -ne 0 ]; then
    fail "$name" "exit $rc: $(clean "$out" | grep -m1 -A1 'panicked at' | tail -1 | cut -c1-200)"
  elif ! quiet "$out"; then
    fail "$name" "$(clean "$out" | grep -m1 -E 'panicked at|ERROR' | cut -c1-200)"
  elif [ -n "${3:-}" ] && ! clean "$out" | grep -q "$3"; then
    fail "$name" "never logged '$3'"
  else
    pass "$name"
  fi
}
# Examples that never end: still alive after $forever seconds, clean log, progress shown.
endless() { # name [pattern the log must show]
  local name="example:$1" out rc
  skipping "$name" && return
  run_example "$1" "$forever"
  rc=$?
  out="$(logname "$name")"
  if [ $rc -ne 124 ]; then
    fail "$name" "ended early, exit $rc: $(clean "$out" | grep -m1 -E 'panicked at|ERROR|Error' | cut -c1-200)"
  elif ! quiet "$out"; then
    fail "$name" "$(clean "$out" | grep -m1 -E 'panicked at|ERROR' | cut -c1-200)"
  elif [ -n "${2:-}" ] && ! clean "$out" | grep -q "$2"; then
    fail "$name" "never logged '$2'"
  else
    pass "$name"
  fi
}

# client-certificate: a TLS example whose URI comes from AMQP_ADDR; with an amqp:// URI it runs
# the same publish/consume over plain TCP.
finite client-certificate 60
# publisher_confirms: confirms, wait_for_confirms, a mandatory unroutable publish (basic.return
# 312 NO_ROUTE followed by its ack).
finite publisher_confirms 60
# connection (async-global-executor): publish, consume, ack, cancel, then conn.run() must end
# cleanly once lapin closes the idle connection.
finite connection 60 "received message"
# tokio and smol: publish, consume with a delegate, then wait forever.
endless tokio
endless smol

# consumer: consumes "hello" forever. While it runs, publisher_confirms publishes three
# messages to "hello" (it has a consumer of its own there too, so consumer gets at least one
# under any fair dispatch).
if ! skipping example:consumer; then
  cexe="$(exe_of example consumer)"
  pexe="$(exe_of example publisher_confirms)"
  cout="$(logname example:consumer)"
  if [ -z "$cexe" ] || [ -z "$pexe" ]; then
    fail example:consumer "not built"
  else
    (cd "$suite" && exec timeout -k 5 $((forever + 20)) "$cexe") >"$cout" 2>&1 &
    cpid=$!
    bg_pids+=("$cpid")
    for _ in $(seq 1 100); do # wait for its basic.consume-ok: the state line after "will consume"
      clean "$cout" | grep -A1 "will consume" | grep -q "state=" && break
      kill -0 "$cpid" 2>/dev/null || break
      sleep 0.1
    done
    (cd "$suite" && timeout -k 5 60 "$pexe") >"$logs/example_consumer_feeder.log" 2>&1
    for _ in $(seq 1 $((forever * 10))); do
      clean "$cout" | grep -q "received message" && break
      kill -0 "$cpid" 2>/dev/null || break
      sleep 0.1
    done
    sleep 1
    alive=no
    if kill -0 "$cpid" 2>/dev/null; then alive=yes; fi
    kill "$cpid" 2>/dev/null
    wait "$cpid" 2>/dev/null
    if [ "$alive" != yes ]; then
      fail example:consumer "ended early: $(clean "$cout" | grep -m1 -E 'panicked at|ERROR' | cut -c1-200)"
    elif ! quiet "$cout"; then
      fail example:consumer "$(clean "$cout" | grep -m1 -E 'panicked at|ERROR' | cut -c1-200)"
    elif ! clean "$cout" | grep -q "received message"; then
      fail example:consumer "received nothing while publisher_confirms published to 'hello'"
    else
      pass example:consumer
    fi
  fi
fi

# Publish loops with a consumer: reconnect_manual (async-global-executor) logs "Error: ..." and
# reconnects on any error; reconnect_semi_automatic (auto-recovery) waits for recovery.
endless reconnect_manual "will consume"
endless reconnect_semi_automatic "will consume"
# pubsub: 1.5 million publishes to "hello" with a consumer acking them, then a cancel; exits 0.
# It also drains what the publish loops above left in "hello".
finite pubsub "$pubsub_timeout"

# Every example in the crate should have been run (or skipped) above.
for f in "$suite"/examples/*.rs; do
  n="$(basename "$f" .rs)"
  case " client-certificate publisher_confirms connection tokio smol consumer reconnect_manual reconnect_semi_automatic pubsub " in
    *" $n "*) ;;
    *) skipping "example:$n" || fail "example:$n" "not covered by interop/lapin/run.sh" ;;
  esac
done

log "done"
if [ $skipped -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
