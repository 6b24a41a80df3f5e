"""Polling, never sleeping for a condition: one helper for the lab tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(condition: Callable[[], T], timeout: float, what: str, every: float = 1.0) -> T:
    """Ask `condition` every `every` seconds until it returns something true; return that, or
    fail after `timeout` seconds saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(every)
    return found
