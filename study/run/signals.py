"""SIGINT, SIGTERM and SIGHUP stop a study the way Tune stops on SIGUSR1: trials end, state is saved."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal or SSH session) stop a study the way Tune
    stops on SIGUSR1: trials end, state is saved.

    Tune's own SIGINT handler is turned off so that all three take one path, and the caller
    learns which one came (the list it yields), to exit 128 + its number instead of printing
    tables as if the study had finished. A second signal stops at once (KeyboardInterrupt).
    """
    received: list[int] = []
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def handle(signum: int, frame: Any) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if received or not callable(tune_handler):  # a second signal, or Tune not listening yet
            raise KeyboardInterrupt
        received.append(signum)
        print(
            f"\n[study] {signal.Signals(signum).name}: stopping the trials and saving Tune's state "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune ends its loop and saves the experiment

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
