"""The local launcher's stop cannot be cut short by a second Ctrl-C or a SIGTERM (it would orphan vLLM engines)."""

import os
import signal

from cluster.local import _uninterruptible


def test_signals_wait_until_the_cleanup_is_done():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda *_: received.append("TERM"))
    try:
        with _uninterruptible():
            os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt anywhere else
            os.kill(os.getpid(), signal.SIGTERM)
        assert received == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        os.kill(os.getpid(), signal.SIGTERM)  # the handler is back once the cleanup is done
        assert received == ["TERM"]
    finally:
        signal.signal(signal.SIGTERM, previous)
