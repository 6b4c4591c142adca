"""The Dramatiq actors the framework check runs a worker of (see dramatiq_check.py). Each
actor appends a line to the file named by DRAMATIQ_CHECK_LOG, which the check reads."""
import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

# max_priority declares every queue with x-max-priority; Dramatiq declares them with
# x-dead-letter-exchange / -routing-key to their .XQ queues as well.
broker = RabbitmqBroker(url=os.environ["BROKER_URL"], max_priority=10)
dramatiq.set_broker(broker)


def note(line):
    with open(os.environ["DRAMATIQ_CHECK_LOG"], "a") as f:
        f.write(f"{line} {time.time():.3f}\n")


@dramatiq.actor(max_retries=0)
def record(text):
    note(text)


@dramatiq.actor(max_retries=0)
def fail():
    raise RuntimeError("this message goes to the dead-letter queue")
