"""Kept only so that studies made by earlier versions can be resumed: nothing here runs.

From fb3d2c7 to 878c88c (2026-12-01), `study run` added a `WarmTables` callback that imported
the tables' modules (scipy.stats, matplotlib) in a driver thread during ASHA's tail: the tables
came 0.5 s sooner on the quickstart. A new user then saw one finished run of about 25 hang for
good: the main thread waited for an import lock held by that thread, which waited for
`logging`'s lock. What held that lock was not found: the hang did not come back in the user's
12 further runs, nor in 30 runs here of the two imports racing in a plain process. The imports
now run only in the main thread, after Ray has stopped: no module is imported by two threads.

Tune pickles its callbacks into `tuner.pkl`, and a resume unpickles them: both names below must
stay importable, or those studies could not be resumed.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback


def import_tables() -> None:
    """What old `WarmTables` pickles name as their `warm` function; no longer called."""


class WarmTables(Callback):
    """A restored old `WarmTables`: takes its pickled fields and does nothing with them."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
