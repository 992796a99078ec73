"""A Tune callback that signs the experiment state and keeps a last readable, signed copy of it.

It also signs each trial's results (params.json, result.json) as they grow.

See `study.trust.experiment_state` (why a copy) and `study.trust.signing` (why a signature).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray.tune import Callback

from study import storage
from study.errors import StudyError
from study.storage import is_uri
from study.trust import signing
from study.trust.experiment_state import BACKUP_DIR, BUNDLE, bundle, readable, state_files, whole

# The folder of the experiment this driver is running, set around Tune's fit by `running_in`. A
# StateBackup restored from tuner.pkl names the folder it was pickled in, which is another one
# once the experiment has been copied or moved: it must never write there.
_running_in: str | None = None


@contextmanager
def running_in(path: str) -> Iterator[None]:
    global _running_in
    previous, _running_in = _running_in, path
    try:
        yield
    finally:
        _running_in = previous


class StateBackup(Callback):
    """After Tune's step (which saves the state), copy the folder's files if the state parses.

    Args:
        experiment_path: the experiment folder, local or a URI (s3://...).
        every_s: at most one copy per this many seconds.
    """

    def __init__(self, experiment_path: str, every_s: float = 1.0) -> None:
        self.path = experiment_path
        self.every_s = every_s
        self.last_copy = 0.0
        self.last_signature: tuple = ()
        self.warned = False
        self.results_seen: dict[str, tuple] = {}  # trial folder -> its result files' (mtime, size) when signed
        self._key: bytes | None = None  # loaded on first use; never pickled (see __getstate__)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl, in the experiment folder: the signing key
        # must not travel with them.
        return {**self.__dict__, "_key": None, "results_seen": {}}

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = signing.secret_key()
        return self._key

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.path = _running_in or self.path  # this run's folder, wherever the pickle was made
        now = time.monotonic()
        if now - self.last_copy < self.every_s or not (is_uri(self.path) or os.path.isdir(self.path)):
            return
        self.last_copy = now
        try:
            self.copy_state()
            signing.sign_all_results(self.path, self.key, self.results_seen)
        except (OSError, StudyError) as exc:  # a full disk, a bucket gone: the study goes on; the previous copy stays
            if not self.warned:
                print(
                    f"[study] warning: could not back up the experiment state ({exc}); the study goes on",
                    file=sys.stderr,
                )
                self.warned = True

    def copy_state(self) -> bool:
        """Sign the folder and copy its state files to the backup; False if they were unchanged or
        did not parse (nothing done)."""
        if is_uri(self.path):
            return self.copy_state_uri()
        files = state_files(self.path)
        signature = tuple((p, os.path.getmtime(p), os.path.getsize(p)) for p in files)
        states = [p for p in files if os.path.basename(p).startswith("experiment_state-")]
        if signature == self.last_signature or not states or not all(readable(p) for p in files):
            return False  # unchanged, or caught mid-write: keep the previous copy
        signing.sign(self.path, self.key)  # the live files, as Tune just saved them
        staging = tempfile.mkdtemp(prefix=".study-state-new-", dir=self.path)
        try:
            for p in files:
                shutil.copy2(p, staging)
            if not all(readable(p) for p in state_files(staging)):
                shutil.rmtree(staging)  # Ray rewrote a file as it was copied: keep the previous copy
                return True  # the live files are signed
            # Signed from the copies themselves: Ray may write a live file between the two.
            signing.sign(staging, self.key)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # no stray half copies
            raise
        old = os.path.join(self.path, BACKUP_DIR)
        retired = old + ".old"
        if os.path.isdir(old):
            os.replace(old, retired)
        os.replace(staging, old)  # the backup is always either the old or the new complete copy
        shutil.rmtree(retired, ignore_errors=True)
        self.last_signature = signature
        return True

    def copy_state_uri(self) -> bool:
        """`copy_state` on an object store: the files are read once, and signed from those bytes;
        the backup is one object, a zip of them with their signature, written before the live
        signature (each is whole, and either matches the files it names)."""
        names = [storage.basename(p) for p in state_files(self.path)]
        blobs = {n: storage.read_bytes(storage.join(self.path, n)) for n in names if n != signing.MANIFEST}
        signature = tuple(sorted((name, hashlib.sha256(data).hexdigest()) for name, data in blobs.items()))
        states = [name for name in blobs if name.startswith("experiment_state-")]
        if signature == self.last_signature or not states or not all(whole(n, d) for n, d in blobs.items()):
            return False
        manifest = {
            name: signing.mac_of(self.key, data) for name, data in blobs.items() if name not in signing.UNSIGNED
        }
        storage.write_bytes(storage.join(self.path, BACKUP_DIR, BUNDLE), bundle(blobs, manifest))
        signing.write_manifest(self.path, manifest)
        self.last_signature = signature
        return True
