"""Waiting for a condition, for the benches and the tests (bench/ is on pytest's pythonpath)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, what: str, every: float = 2.0) -> T:
    """Call ``check`` every ``every`` seconds until it returns something truthy, and return that;
    after ``timeout`` seconds, raise ``TimeoutError`` naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")
