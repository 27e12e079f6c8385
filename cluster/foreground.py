"""Keep a started service (a local cluster, the Prometheus pair) in the foreground until Ctrl-C or `kill`."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

T = TypeVar("T")


def hold(service: AbstractContextManager[T], ready: Callable[[T], None], error: type[Exception]) -> None:
    """Enter `service`, call `ready`, wait; Ctrl-C or SIGTERM leaves its `with` (which stops it); `error` exits non-zero."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup in `with` on `kill` too
    try:
        with service as started:
            ready(started)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except error as e:
        sys.exit(f"error: {e}")
