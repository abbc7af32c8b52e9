"""The engine's clock.

Idle and paused timeouts are measured with it. Tests drive it without waiting real minutes:
``LOCALSB_TEST_CLOCK_FILE`` names a file holding a number of seconds added to the real time
(a test facility, not a user option; see docs/architecture.md).
"""
from __future__ import annotations

import os
import time


class Clock:
    def __init__(self, offset_file: str | None = None):
        self.offset_file = offset_file if offset_file is not None else os.environ.get("LOCALSB_TEST_CLOCK_FILE")

    def offset(self) -> float:
        if not self.offset_file:
            return 0.0
        try:
            with open(self.offset_file) as fh:
                return float(fh.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    def now(self) -> float:
        return time.time() + self.offset()
