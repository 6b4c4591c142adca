"""Dramatiq against a broker, as its users run it: a worker, a message processed, a delayed
message arriving after its delay, a failing actor's message in its dead-letter queue (.XQ), and
priorities. Exits non-zero on the first failure.

    BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2F python dramatiq_check.py
"""
import os
import subprocess
import sys
import tempfile
import time

import pika

os.environ.setdefault("DRAMATIQ_CHECK_LOG", tempfile.mktemp(prefix="dramatiq-check-"))
from dramatiq_app import broker, fail, record  # noqa: E402

LOG = os.environ["DRAMATIQ_CHECK_LOG"]


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} dramatiq {name} {detail}".rstrip(), flush=True)
    if not ok:
        raise SystemExit(1)


def lines():
    try:
        with open(LOG) as f:
            return [l.split() for l in f.read().splitlines()]
    except FileNotFoundError:
        return []


def wait_for(text, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for l in lines():
            if l[0] == text:
                return float(l[1])
        time.sleep(0.05)
    return None


def worker():
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "dramatiq_app", "--processes", "1", "--threads", "1"],
        cwd=here,
    )


def stop(w):
    w.terminate()
    try:
        w.wait(timeout=30)
    except subprocess.TimeoutExpired:
        w.kill()


def queue_count(name):
    c = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
    try:
        return c.channel().queue_declare(name, passive=True).method.message_count
    finally:
        c.close()


def broker_order(queue, n):
    """The first n messages' actor arguments as the broker hands them out (given back after)."""
    c = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
    try:
        ch = c.channel()
        got = [ch.basic_get(queue) for _ in range(n)]
        for m in got:
            ch.basic_nack(m[0].delivery_tag, requeue=True)
        return [m[2].decode() for m in got]
    finally:
        c.close()


def fresh_queues():
    """Deletes what an earlier run against the same broker may have left."""
    c = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
    try:
        ch = c.channel()
        for q in ("default", "default.DQ", "default.XQ"):
            ch.queue_delete(q)
    finally:
        c.close()


def main():
    fresh_queues()
    # Priorities, with no worker yet: the broker hands the higher one out first (the worker
    # then orders what it prefetched by its own rules).
    record.send_with_options(args=("low",), broker_priority=1)
    record.send_with_options(args=("high",), broker_priority=9)
    order = broker_order("default", 2)
    check("priorities", '"high"' in order[0] and '"low"' in order[1])
    w = worker()
    try:
        check("message", wait_for("low") is not None and wait_for("high") is not None)
        sent = time.time()
        record.send_with_options(args=("delayed",), delay=1500)
        at = wait_for("delayed")
        check("delayed-message", at is not None and at - sent >= 1.4, f"after {at and at - sent:.2f} s")
        fail.send()
        deadline = time.time() + 30
        while queue_count("default.XQ") < 1 and time.time() < deadline:
            time.sleep(0.1)
        check("dead-letter-queue", queue_count("default.XQ") == 1)
    finally:
        stop(w)
        broker.close()


if __name__ == "__main__":
    main()
