"""The Celery application the framework check runs a worker of (see celery_check.py)."""
import os
import time

from celery import Celery

app = Celery("warren_check", broker=os.environ["BROKER_URL"], backend="rpc://")
app.conf.update(
    # Declares the task queue with x-max-priority.
    task_queue_max_priority=10,
    task_default_priority=5,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=3)
def flaky(self):
    """Fails twice, retrying after a countdown, then succeeds: returns its attempt number."""
    if self.request.retries < 2:
        raise self.retry(countdown=0.5, exc=RuntimeError("not yet"))
    return self.request.retries + 1


@app.task
def stamp():
    return time.time()
