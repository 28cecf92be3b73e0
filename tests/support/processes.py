"""Process checks for the tests that must leave nothing running behind them."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether `pid` is running: a zombie waiting for a foreign parent to reap it is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
