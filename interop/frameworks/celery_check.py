"""Celery against a broker, as its users run it: a worker (with events), remote control
(ping, inspect), a task round trip through the rpc result backend, a countdown, a retry, and
the event stream. Exits non-zero on the first failure.

    BROKER_URL=amqp://guest:guest@127.0.0.1:5672// python celery_check.py
"""
import os
import subprocess
import sys
import threading
import time

from celery_app import add, app, flaky, stamp


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'} celery {name} {detail}".rstrip(), flush=True)
    if not ok:
        raise SystemExit(1)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-E", "--pool=solo",
         "--loglevel=WARNING", "--hostname=check@%h"],
        cwd=here,
    )
    try:
        replies = []
        deadline = time.time() + 60
        while not replies and time.time() < deadline:
            replies = app.control.ping(timeout=1.0)
        check("remote-control-ping", any("ok" in next(iter(r.values())) for r in replies), str(replies))
        stats = app.control.inspect(timeout=2.0).stats() or {}
        check("remote-control-inspect", len(stats) == 1, str(list(stats)))

        events, seen = [], threading.Event()

        def capture():
            with app.connection() as conn:
                def on_event(e):
                    events.append(e["type"])
                    if e["type"] == "task-succeeded":
                        seen.set()
                recv = app.events.Receiver(conn, handlers={"*": on_event})
                try:
                    recv.capture(limit=None, timeout=20, wakeup=True)
                except Exception:
                    pass

        t = threading.Thread(target=capture, daemon=True)
        t.start()
        time.sleep(1.0)
        check("task-round-trip", add.delay(2, 3).get(timeout=20) == 5)
        check("task-events", seen.wait(15), str(sorted(set(events))))

        started = time.time()
        r = stamp.apply_async(countdown=1.5)
        ran_at = r.get(timeout=30)
        check("countdown", ran_at - started >= 1.4, f"ran {ran_at - started:.2f} s after")

        check("retry", flaky.delay().get(timeout=30) == 3)
        # Priorities: the queue was declared with x-max-priority; a prioritised task runs.
        check("priority", add.apply_async((1, 1), priority=9).get(timeout=20) == 2)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    main()
