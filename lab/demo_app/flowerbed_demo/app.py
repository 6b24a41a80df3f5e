"""A small Celery app whose tasks succeed, fail, retry and run long.

The broker comes from CELERY_BROKER_URL in the environment, never from code.
"""

import random
import time

from celery import Celery

app = Celery("flowerbed_demo")
app.conf.update(
    worker_send_task_events=True,  # Flower follows tasks through events
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    result_backend=None,
)


@app.task(name="flowerbed_demo.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="flowerbed_demo.fail")
def fail(message: str = "this task always fails") -> None:
    raise RuntimeError(message)


@app.task(name="flowerbed_demo.flaky", bind=True, max_retries=3, default_retry_delay=1)
def flaky(self, failure_rate: float = 0.5) -> str:
    if random.random() < failure_rate:
        raise self.retry(exc=RuntimeError("flaky failure"))
    return "succeeded"


@app.task(name="flowerbed_demo.sleep")
def sleep(seconds: float = 30) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="flowerbed_demo.hang")
def hang(seconds: float = 90) -> float:
    """A run that outlasts the lab's stuck-task threshold (the producer never sends it)."""
    time.sleep(seconds)
    return seconds
