#!/usr/bin/env bash
# warren vs RabbitMQ, side by side on this machine, with one command.
#
# Installs what is missing (RabbitMQ from Debian, python3-venv, matplotlib from PyPI into a
# venv under the cargo target dir), builds warren and warren-perf in release mode, starts a
# private RabbitMQ node and a warren on loopback (free ports, throw-away data dirs), runs the
# same scenario matrix against both for R rounds (alternating which broker goes first), and
# writes a markdown table of medians with the ratio warren / RabbitMQ, the raw JSON lines,
# the logs, and plots. Every run is bounded in time; both brokers are stopped at the end.
#
# Run `crates/perf/compare.sh --help` for the options.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: crates/perf/compare.sh [options]

  --rounds N       rounds of the whole matrix (default 3; medians are taken over them)
  --quick          smoke run: 1 round, 2 s runs, smaller pre-fills, 100000-message backlog
  --duration S     seconds per throughput/latency run (default 5; 2 with --quick)
  --backlog N      messages in the persistent backlog scenario (default 1000000;
                   100000 with --quick; 0 skips it)
  --connections N  idle connections in the connections scenario (default 1000; 0 skips it)
  --stream N       messages in the stream scenario (default 1000000; 100000 with --quick;
                   0 skips it): fill a stream queue, read it from `first`, 100 readers
  --only LIST      comma-separated groups to run: connections,latency,throughput,
                   flow,persistent,fanout,backlog,stream (default: all)
  --out FILE       markdown table (default: <target>/compare/results.md); the raw JSON
                   lines, logs and plots go to the same folder
  --no-install     do not install missing packages (fail instead)
  --no-plots       no matplotlib venv, no plots
  -h, --help       this text

Needs root (or the rabbitmq user) to run RabbitMQ as its own user. Ports are picked free
at random in 27000-31999; the RabbitMQ node is compare@localhost (or
$COMPARE_RABBITMQ_NODE).
EOF
}

ROUNDS=""
QUICK=0
DURATION=""
BACKLOG=""
STREAM=""
CONNS=1000
ONLY="all"
OUT=""
INSTALL=1
PLOTS=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --backlog) BACKLOG=$2; shift 2 ;;
    --stream) STREAM=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-plots) PLOTS=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in "${ROUNDS:-1}" "${DURATION:-1}" "${BACKLOG:-0}" "${STREAM:-0}" "$CONNS"; do
    [[ "$v" =~ ^[0-9]+$ ]] || { echo "not a number: $v" >&2; exit 2; }
done
if [ "$QUICK" = 1 ]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-2}
    BACKLOG=${BACKLOG:-100000}
    STREAM=${STREAM:-100000}
    SCALE=5 # pre-fills and caps divided by this
else
    ROUNDS=${ROUNDS:-3}
    DURATION=${DURATION:-5}
    BACKLOG=${BACKLOG:-1000000}
    STREAM=${STREAM:-1000000}
    SCALE=1
fi
[ "$ROUNDS" -ge 1 ] && [ "$DURATION" -ge 1 ] || { echo "--rounds and --duration must be >= 1" >&2; exit 2; }

wants() { [ "$ONLY" = all ] || [[ ",$ONLY," == *",$1,"* ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PERF_DIR="$ROOT/crates/perf"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
OUT=${OUT:-$TARGET/compare/results.md}
OUTDIR=$(dirname "$OUT")
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
OUT="$OUTDIR/$(basename "$OUT")"
RAW="$OUTDIR/results.jsonl"
LOGDIR="$OUTDIR/logs"
VENV="$TARGET/compare-venv"
STARTED=$(date +%s)

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# 1. What the script needs.
RMQ_BIN=/usr/lib/rabbitmq/bin
need=()
[ -x "$RMQ_BIN/rabbitmq-server" ] || need+=(rabbitmq-server)
command -v python3 >/dev/null || need+=(python3)
if [ "$PLOTS" = 1 ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then need+=(python3-venv); fi
command -v setpriv >/dev/null || need+=(util-linux)
command -v timeout >/dev/null || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing packages: ${need[*]} (run without --no-install)"
    [ "$(id -u)" = 0 ] || die "missing packages: ${need[*]}; run as root to install them"
    log "installing ${need[*]} from Debian"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi
PY=python3
if [ "$PLOTS" = 1 ]; then
    if ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        if [ "$INSTALL" = 1 ]; then
            log "installing matplotlib into $VENV"
            python3 -m venv "$VENV" >&2
            "$VENV/bin/pip" install -q matplotlib >&2 || log "warning: matplotlib did not install; no plots"
        else
            log "warning: no matplotlib in $VENV (and --no-install): no plots"
        fi
    fi
    "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null && PY="$VENV/bin/python"
fi

# ---------------------------------------------------------------------------------------
# 2. Build.
log "building warren and warren-perf (release)"
(cd "$ROOT" && cargo build --release -q -p warren -p warren-perf) >&2
WARREN="$TARGET/release/warren"
PERF="$TARGET/release/warren-perf"
[ -x "$WARREN" ] && [ -x "$PERF" ] || die "build did not produce $WARREN and $PERF"

# The tool opens many sockets (connections scenario): use the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------
# 3. Brokers.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    command -v ss >/dev/null && ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q . && return 0
    return 1
}
PICKED=" "
pick_port() {
    local p i
    for i in $(seq 1 500); do
        p=$((27000 + RANDOM % 5000))
        [[ "$PICKED" == *" $p "* ]] && continue
        port_in_use "$p" && continue
        PICKED+="$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}
wait_port() { # port seconds
    local end=$((SECONDS + $2))
    while [ $SECONDS -lt $end ]; do
        port_in_use "$1" && return 0
        sleep 0.1
    done
    return 1
}
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }
wait_idle() { # pid: until it uses under 10 % of a core over half a second (at most 30 s)
    local end=$((SECONDS + 30)) a b
    while [ $SECONDS -lt $end ]; do
        a=$(cpu_ticks "$1")
        sleep 0.5
        b=$(cpu_ticks "$1")
        if [ -z "$a" ] || [ -z "$b" ] || [ $((b - a)) -le 5 ]; then return 0; fi
    done
    log "  (broker $1 still busy after 30 s)"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
rss_of() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status" 2>/dev/null || echo null; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/warren-compare.XXXXXX")
chmod 755 "$WORK" # RabbitMQ's user works under it
mkdir -p "$LOGDIR"
: >"$RAW"
WPORT=$(pick_port)
RPORT=$(pick_port)
RDIST=$(pick_port)
WDATA="$WORK/warren-data"
WPID=""
RBASE="$WORK/rabbitmq"
RNODE=${COMPARE_RABBITMQ_NODE:-compare@localhost}
RPID=""

start_warren() { # [fresh]
    if [ "${1:-}" = fresh ]; then rm -rf "$WDATA"; fi
    mkdir -p "$WDATA"
    "$WARREN" --listen "127.0.0.1:$WPORT" --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 --data-dir "$WDATA" >>"$LOGDIR/warren.log" 2>&1 &
    WPID=$!
}
await_warren() {
    wait_port "$WPORT" 300 || die "warren did not listen on $WPORT (see $LOGDIR/warren.log)"
}
stop_warren() {
    [ -n "$WPID" ] || return 0
    kill -TERM "$WPID" 2>/dev/null || true
    local end=$((SECONDS + 60))
    while kill -0 "$WPID" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
    kill -KILL "$WPID" 2>/dev/null || true
    wait "$WPID" 2>/dev/null || true
    WPID=""
}

# RabbitMQ runs as its own user. setpriv (not su, whose PAM session resets the open-files
# limit to 1024, below what 1000 connections need) keeps this shell's limits.
AS_RABBIT=()
if [ "$(id -u)" = 0 ]; then
    AS_RABBIT=(setpriv --reuid rabbitmq --regid rabbitmq --init-groups)
elif [ "$(id -un)" != rabbitmq ]; then
    die "run as root (RabbitMQ runs as the rabbitmq user)"
fi
RMQ_HOME=$(getent passwd rabbitmq | cut -d: -f6)
RMQ_HOME=${RMQ_HOME:-/var/lib/rabbitmq}
rmq() {
    (
        cd "$RMQ_HOME"
        env HOME="$RMQ_HOME" \
            RABBITMQ_NODENAME="$RNODE" \
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_NODE_PORT="$RPORT" \
            RABBITMQ_DIST_PORT="$RDIST" \
            RABBITMQ_MNESIA_BASE="$RBASE/mnesia" \
            RABBITMQ_LOG_BASE="$RBASE/log" \
            RABBITMQ_PID_FILE="$RBASE/compare.pid" \
            RABBITMQ_CONFIG_FILE="$RBASE/rabbitmq.conf" \
            RABBITMQ_ADVANCED_CONFIG_FILE="$RBASE/advanced.config" \
            RABBITMQ_CONF_ENV_FILE="$RBASE/rabbitmq-env.conf" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$RBASE/enabled_plugins" \
            "${AS_RABBIT[@]}" "$@"
    )
}
start_rabbit() { # [fresh]
    if [ "${1:-}" = fresh ]; then rm -rf "$RBASE/mnesia"; fi
    mkdir -p "$RBASE/mnesia" "$RBASE/log"
    [ -f "$RBASE/rabbitmq.conf" ] || echo "# defaults (compare.sh)" >"$RBASE/rabbitmq.conf"
    [ -f "$RBASE/rabbitmq-env.conf" ] || : >"$RBASE/rabbitmq-env.conf"
    [ -f "$RBASE/enabled_plugins" ] || echo "[]." >"$RBASE/enabled_plugins"
    rm -f "$RBASE/compare.pid"
    chown -R rabbitmq:rabbitmq "$RBASE" 2>/dev/null || true
    RABBIT_STARTED=1
    rmq "$RMQ_BIN/rabbitmq-server" -detached >>"$LOGDIR/rabbitmq-start.log" 2>&1
}
rabbit_pidfile() { cat "$RBASE/compare.pid" 2>/dev/null | tr -dc 0-9 || true; }
await_rabbit() {
    # await_startup fails at once while the node is not up yet: retry, bounded.
    local end=$((SECONDS + 900))
    until rmq timeout 300 "$RMQ_BIN/rabbitmqctl" -n "$RNODE" -q await_startup >>"$LOGDIR/rabbitmq-start.log" 2>&1; do
        [ $SECONDS -lt $end ] || die "RabbitMQ did not start (see $LOGDIR/rabbitmq-start.log and $RBASE/log)"
        local p
        p=$(rabbit_pidfile)
        if [ -n "$p" ] && ! [ -d "/proc/$p" ]; then die "RabbitMQ exited while starting (see $RBASE/log)"; fi
        sleep 0.5
    done
    wait_port "$RPORT" 60 || die "RabbitMQ does not listen on $RPORT"
    RPID=$(rabbit_pidfile)
    if [ -z "$RPID" ]; then
        RPID=$(rmq "$RMQ_BIN/rabbitmqctl" -n "$RNODE" -q eval 'os:getpid().' | tr -dc 0-9)
    fi
    [ -n "$RPID" ] && [ -d "/proc/$RPID" ] || die "no RabbitMQ pid"
}
stop_rabbit() {
    local pid=${RPID:-$(rabbit_pidfile)}
    rmq timeout 300 "$RMQ_BIN/rabbitmqctl" -n "$RNODE" -q stop >>"$LOGDIR/rabbitmq-start.log" 2>&1 || true
    if [ -n "$pid" ]; then
        local end=$((SECONDS + 120))
        while [ -d "/proc/$pid" ] && [ $SECONDS -lt $end ]; do sleep 0.2; done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    RPID=""
}
RABBIT_STARTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    log "stopping the brokers"
    stop_warren
    if [ "$RABBIT_STARTED" = 1 ]; then stop_rabbit; fi
    cp "$RBASE"/log/*.log "$LOGDIR/" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if rmq timeout 30 "$RMQ_BIN/rabbitmqctl" -n "$RNODE" -q ping >/dev/null 2>&1; then
    die "a RabbitMQ node $RNODE is already running (another compare.sh?); stop it with \
rabbitmqctl -n $RNODE stop, or pick another name with COMPARE_RABBITMQ_NODE=name@localhost"
fi

restart_fresh() { # both brokers, empty data dirs
    stop_warren
    if [ "$RABBIT_STARTED" = 1 ]; then stop_rabbit; fi
    start_warren fresh
    start_rabbit fresh
    await_warren
    await_rabbit
}

uri_of() { # broker
    if [ "$1" = warren ]; then echo "amqp://guest:guest@127.0.0.1:$WPORT/%2f"; else echo "amqp://guest:guest@127.0.0.1:$RPORT/%2f"; fi
}
pid_of() { if [ "$1" = warren ]; then echo "$WPID"; else echo "$RPID"; fi; }

# ---------------------------------------------------------------------------------------
# 4. Scenarios. Caps (messages per producer) bound a run's memory: warren has no memory
# alarm, and a publish-only run queues everything it publishes.
D=$DURATION
C=$((D * 2)) # the most seconds for a consume-only run
declare -a SCN_NAME SCN_ARGS
add() { SCN_NAME+=("$1"); shift; SCN_ARGS+=("$*"); }
# First in a round, on fresh brokers: RSS growth is only a fair measure of what connections
# cost while the heap has no free memory left over from earlier runs to reuse.
if wants connections && [ "$CONNS" -gt 0 ]; then
    add "connections-$CONNS" connections --count "$CONNS" --parallel 32 --timeout 60 --hold 3
fi
if wants latency; then
    add latency-1k latency -P 1 -C 1 -s 16 --rate 1000 --duration "$D" --ack multiple:10
    add latency-10k latency -P 1 -C 1 -s 16 --rate 10000 --duration "$D" --ack multiple:10
fi
if wants throughput; then
    for spec in 16B:16:4000000:500000 1KiB:1024:1500000:200000 64KiB:65536:20000:10000; do
        IFS=: read -r label size cap fill <<<"$spec"
        cap=$((cap / SCALE)) fill=$((fill / SCALE))
        add "transient-$label-publish" throughput -P 1 -C 0 -s "$size" --duration "$D" --count "$cap"
        add "transient-$label-consume" throughput -P 0 -C 1 -s "$size" --prefill "$fill" --duration "$C"
        add "transient-$label-e2e" throughput -P 1 -C 1 -s "$size" --duration "$D" --count $((cap * 2))
    done
fi
if wants flow; then
    # Publishers outnumber consumers on one queue: consumers must keep their share (flow
    # control), the backlog and RSS stay bounded.
    for pc in 2:2 4:2 8:2; do
        IFS=: read -r p c <<<"$pc"
        add "flow-16B-${p}p${c}c" throughput -P "$p" -C "$c" -s 16 --duration "$D" --count $((4000000 / SCALE))
    done
fi
if wants persistent; then
    add persistent-1KiB-confirm-1p throughput -P 1 -C 0 -s 1024 --persistent --confirm 500 --duration "$D"
    add persistent-1KiB-confirm-8p throughput -P 8 -C 0 -s 1024 --persistent --confirm 500 --duration "$D"
fi
if wants fanout; then
    add fanout10-16B throughput -P 1 -C 10 --fanout 10 -s 16 --duration "$D" --count $((2000000 / SCALE))
fi
DO_BACKLOG=0
if wants backlog && [ "$BACKLOG" -gt 0 ]; then DO_BACKLOG=1; fi
DO_STREAM=0
if wants stream && [ "$STREAM" -gt 0 ]; then DO_STREAM=1; fi

summary_line() { "$PY" "$PERF_DIR/compare_report.py" line "$1" 2>/dev/null || echo "$1"; }

# One warren-perf run: records {"round","scenario","broker","rc","wall_s","result"}.
run_one() { # round scenario broker args...
    local round=$1 name=$2 broker=$3
    shift 3
    local sub=$1
    shift
    local uri pid logf prefix out rc=0 t0 t1 json
    uri=$(uri_of "$broker")
    pid=$(pid_of "$broker")
    logf="$LOGDIR/r$round-$name-$broker.log"
    prefix="cmp-r$round-$name-$broker-$RANDOM"
    local extra=(--uri "$uri" --pid "$pid") limit=600
    case "$sub" in throughput | latency) extra+=(--prefix "$prefix" --cleanup) ;; esac
    if [ "$sub" = stream ]; then
        if [ "$broker" = warren ]; then extra+=(--data-dir "$WDATA"); else extra+=(--data-dir "$RBASE/mnesia"); fi
        limit=$((600 + STREAM / 10000))
    fi
    t0=$(date +%s.%N)
    out=$(timeout -k 10 "$limit" "$PERF" "$sub" "${extra[@]}" "$@" 2>"$logf") || rc=$?
    t1=$(date +%s.%N)
    json=$(printf '%s\n' "$out" | grep '^{' | tail -n 1 || true)
    [ -n "$json" ] || json=null
    local rec
    rec=$(printf '{"round":%d,"scenario":"%s","broker":"%s","rc":%d,"wall_s":%.2f,"result":%s}' \
        "$round" "$name" "$broker" "$rc" "$(elapsed "$t0" "$t1")" "$json")
    echo "$rec" >>"$RAW"
    log "r$round $name $broker: $(summary_line "$rec")"
    [ "$rc" = 0 ] || log "  (exit $rc; see $logf)"
    wait_idle "$pid" # deleted queues, closed connections
}

# The persistent backlog: fill, memory and disk, restart, ready, drain.
run_backlog() { # round broker
    local round=$1 broker=$2 uri q logf fill ready drain rc=0 t0 t1 rss dir
    uri=$(uri_of "$broker")
    q="cmp-backlog-r$round"
    logf="$LOGDIR/r$round-backlog-$broker.log"
    if [ "$broker" = warren ]; then dir="$WDATA"; else dir="$RBASE/mnesia"; fi
    local limit=$((600 + BACKLOG / 1000))
    fill=$(timeout -k 10 "$limit" "$PERF" backlog --uri "$uri" --queue "$q" --count "$BACKLOG" \
        --pid "$(pid_of "$broker")" --data-dir "$dir" --fill-only 2>>"$logf" | grep '^{' | tail -n 1) || rc=$?
    [ -n "$fill" ] || fill=null
    log "r$round backlog $broker: filled: $fill"
    # Restart: stop (SIGTERM / rabbitmqctl stop, waiting for the process to exit), then the
    # clock runs from the start command to the queue being served with all its messages.
    if [ "$broker" = warren ]; then
        stop_warren
        t0=$(date +%s.%N)
        start_warren
    else
        stop_rabbit
        t0=$(date +%s.%N)
        start_rabbit
    fi
    ready=$(timeout -k 10 "$limit" "$PERF" ready --uri "$uri" --queue "$q" --expect "$BACKLOG" \
        --timeout $((limit - 30)) 2>>"$logf" | grep '^{' | tail -n 1) || rc=$?
    t1=$(date +%s.%N)
    [ -n "$ready" ] || ready=null
    if [ "$broker" = rabbitmq ]; then await_rabbit; else await_warren; fi
    sleep 2
    rss=$(rss_of "$(pid_of "$broker")")
    drain=$(timeout -k 10 "$limit" "$PERF" backlog --uri "$uri" --queue "$q" --count "$BACKLOG" \
        --pid "$(pid_of "$broker")" --data-dir "$dir" --drain-only 2>>"$logf" | grep '^{' | tail -n 1) || rc=$?
    [ -n "$drain" ] || drain=null
    local rec
    rec=$(printf '{"round":%d,"scenario":"backlog","broker":"%s","rc":%d,"result":{"count":%d,"fill":%s,"ready":%s,"restart_seconds":%.2f,"rss_restarted":%s,"drain":%s}}' \
        "$round" "$broker" "$rc" "$BACKLOG" "$fill" "$ready" "$(elapsed "$t0" "$t1")" "$rss" "$drain")
    echo "$rec" >>"$RAW"
    log "r$round backlog $broker: $(summary_line "$rec")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "warren on 127.0.0.1:$WPORT, RabbitMQ ($RNODE) on 127.0.0.1:$RPORT (dist $RDIST); work dir $WORK"
log "rounds $ROUNDS, ${D} s runs, backlog $BACKLOG, stream $STREAM, load average $LOAD_BEFORE"
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS: fresh brokers"
    restart_fresh
    for i in "${!SCN_NAME[@]}"; do
        # Alternate which broker goes first, per scenario and per round.
        if [ $(((i + round) % 2)) = 0 ]; then order="warren rabbitmq"; else order="rabbitmq warren"; fi
        for broker in $order; do
            # shellcheck disable=SC2086
            run_one "$round" "${SCN_NAME[$i]}" "$broker" ${SCN_ARGS[$i]}
        done
    done
    if [ "$DO_BACKLOG" = 1 ]; then
        log "round $round: backlog of $BACKLOG persistent 1 KiB messages, fresh brokers"
        restart_fresh
        if [ $((round % 2)) = 0 ]; then order="warren rabbitmq"; else order="rabbitmq warren"; fi
        for broker in $order; do run_backlog "$round" "$broker"; done
    fi
    if [ "$DO_STREAM" = 1 ]; then
        log "round $round: a stream of $STREAM 1 KiB messages, fresh brokers"
        restart_fresh
        if [ $((round % 2)) = 0 ]; then order="rabbitmq warren"; else order="warren rabbitmq"; fi
        for broker in $order; do
            run_one "$round" "stream-1KiB" "$broker" stream --queue "cmp-stream-r$round" \
                --count "$STREAM" --size 1024 --readers 100 --reader-window 100 --cleanup
        done
    fi
done

# ---------------------------------------------------------------------------------------
# 5. Report.
ELAPSED=$(($(date +%s) - STARTED))
RMQ_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)
HEADER="warren ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)) vs RabbitMQ $RMQ_VERSION, \
$(date -u +%Y-%m-%d), $(nproc) cores shared by broker and tool; median of $ROUNDS round(s), ${D} s runs; \
load average before ${LOAD_BEFORE}, after $(cut -d' ' -f1-3 /proc/loadavg); took $((ELAPSED / 60)) min $((ELAPSED % 60)) s."
plot_args=()
if [ "$PY" != python3 ]; then plot_args=(--plots "$OUTDIR"); fi
"$PY" "$PERF_DIR/compare_report.py" report "$RAW" "$OUT" --header "$HEADER" "${plot_args[@]}"
log "table: $OUT; raw: $RAW; logs: $LOGDIR"
