"""Keeps sending the demo app's tasks so Flower always has something to show.

Bounded: stops by itself after FLOWERBED_PRODUCER_HOURS (default 12) hours.
"""

import itertools
import os
import random
import time

from flowerbed_demo.app import add, fail, flaky, sleep

INTERVAL = float(os.environ.get("FLOWERBED_PRODUCER_INTERVAL", "2"))
DEADLINE = time.monotonic() + 3600 * float(os.environ.get("FLOWERBED_PRODUCER_HOURS", "12"))


def main() -> None:
    for n in itertools.count():
        if time.monotonic() > DEADLINE:
            return
        add.delay(n, random.randint(0, 100))
        if n % 5 == 0:
            flaky.delay()
        if n % 7 == 0:
            fail.delay()
        if n % 10 == 0:
            sleep.delay(random.uniform(5, 30))
        time.sleep(INTERVAL)


if __name__ == "__main__":
    main()
