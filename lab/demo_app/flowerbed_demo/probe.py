"""How many pool processes a worker has, asked over the broker; 0 when it does not answer.

    python -m flowerbed_demo.probe NODENAME [TIMEOUT]

The lab's readiness check for its worker. A worker in a warm shutdown has already stopped
its control consumer while it finishes its tasks, so it never answers: alive is not ready.
"""

import sys

from flowerbed_demo.app import app


def pool_size(nodename: str, timeout: float = 2.0) -> int:
    replies = app.control.inspect(destination=[nodename], timeout=timeout, limit=1).stats() or {}
    stats = replies.get(nodename)
    return len(stats["pool"]["processes"]) if stats else 0


if __name__ == "__main__":
    print(pool_size(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 2.0))
