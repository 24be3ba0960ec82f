"""Progress lines for logs that are not a terminal.

Progress bars are off when stderr is not a terminal (a CI job, ``nohup``, a pipeline's log file), which
left a long distillation or search without a line for an hour: CI systems kill a job after minutes
without output (CircleCI and Travis after 10), and a person reading the log cannot tell a slow run from
a hung one. A heartbeat says where a loop is, at most every ``EVERY_S`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 30.0


class Heartbeat:
    """``tick(message)`` logs ``message`` on the first tick, on the last (``done=True``) and whenever
    ``EVERY_S`` seconds have passed since the last line; a no-op without ``log``. ``after_s``: quiet for that
    long from its start, so a loop that ends sooner (a small folder of images decoded) says nothing at all."""

    def __init__(self, log: Callable[[str], None] | None, after_s: float = 0.0) -> None:
        self.log = log
        self.last: float | None = None
        self.start, self.after_s = time.monotonic(), after_s

    def tick(self, message: str, done: bool = False) -> None:
        if self.log is None:
            return
        now = time.monotonic()
        if self.last is None and now - self.start < self.after_s:
            return
        if self.last is None or done or now - self.last >= EVERY_S:
            self.log(message)
            self.last = now
