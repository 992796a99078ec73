"""Trial checkpoints: read safely (tensors and plain containers only), and found again after a crash.

Every checkpoint folder holds the trainer's state (`trainer.pt`) and a small `meta.json`: the
epoch it holds, a key of the trial's config, and the metrics of every epoch up to it. After a
crash of the driver, Tune's saved state, and the result.json files Tune copies to storage with
it, can be seconds older than the checkpoints on disk (the state is saved on a period, see
`study.run.state_save_period`). A resumed trial then continues from its newest checkpoint by
epoch, not from the one Tune last recorded, and first reports again ("replayed": true) the
epochs after that one, so that result.json, ASHA and Optuna have every epoch. So at most the
epoch in flight at the crash is trained again, when every epoch is checkpointed (see
`checkpoint_due`).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from study.errors import StudyError, reason
from study.names import CHECKPOINT_FILE, CHECKPOINT_SIGNATURE, META_FILE
from study.storage import is_uri, json_lines, read_bytes

CHECKPOINT_SHARE = 0.05  # checkpoint_every 0 (auto): writing stays at or under this share of training


def scratch_root() -> str | None:
    """This user's folder for checkpoints being written, cleared of those whose writer died.

    A trial writes each checkpoint into a temporary folder here (named after its process id)
    before Tune moves it to storage. A worker killed meanwhile (out of memory, SIGKILL) would
    leave it in the temp dir for good: a width-1024 CNN's is 2 GB. Each trial's start removes
    the folders of processes that no longer run. None (use the plain temp dir) when the folder
    cannot be made or belongs to someone else.
    """
    root = os.path.join(tempfile.gettempdir(), f"study-checkpoints-{os.getuid()}")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        if os.stat(root).st_uid != os.getuid():
            return None
        for name in os.listdir(root):
            pid = name.split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    except OSError:
        return None
    return root


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def always_checkpointed(epoch: int, epochs: int, stop_epochs: tuple[int, ...]) -> bool:
    """The last epoch, and one at which the scheduler may stop the trial (then its last)."""
    return epoch >= epochs or epoch in stop_epochs


def checkpoint_due(
    every: int,
    epochs: int,
    history: list[Mapping[str, Any]],
    write_s: float = 0.0,
    stop_epochs: tuple[int, ...] = (),
) -> bool:
    """Whether to checkpoint the epoch just trained, the last entry of `history` (metrics per epoch).

    Always: the last epoch, an epoch at which the scheduler may stop the trial (`stop_epochs`,
    ASHA's rungs: it is then the trial's last, the one `study export` takes), and a diverged
    one. `every` > 0: also every that many epochs. `every` 0 (auto): `write_s` is what a write
    is expected to take (see `expected_write_s`), and a checkpoint is written once the epochs
    trained since the newest one (or since the start) took at least 1/CHECKPOINT_SHARE times as
    long, unless the epochs until the next one that is always written (at this trial's mean
    epoch time) take less than that: that one then comes soon enough. So every epoch while a
    write costs at most 5% of an epoch; otherwise every write but the forced ones follows at
    least 20 writes' worth of training, and a crash repeats at most about that much.
    """
    current = history[-1]
    if always_checkpointed(current["epoch"], epochs, stop_epochs) or current.get("diverged"):
        return True
    if every:
        return current["epoch"] % every == 0
    budget = write_s / CHECKPOINT_SHARE  # seconds of training one write must pay for
    trained = 0.0
    for metrics in reversed(history):
        if "checkpoint_s" in metrics:
            break
        trained += metrics["epoch_time_s"]
    mean_epoch_s = sum(m["epoch_time_s"] for m in history) / len(history)
    next_forced = min([e for e in stop_epochs if e > current["epoch"]] + [epochs])
    return trained >= budget and mean_epoch_s * (next_forced - current["epoch"]) >= budget


class WriteSpeed:
    """How fast this process writes checkpoints (bytes/s): measured by a probe, then by each write.

    One per worker process (`WRITE_SPEED`), so a reused worker's later trials expect their first
    write to take what the earlier trials' writes took, and only a worker's first trial probes.
    """

    PROBE_BYTES = 64 * 2**20  # at most; enough to see the disk's speed, not its latency

    def __init__(self) -> None:
        self.bytes_per_s: float | None = None

    def note(self, nbytes: int, seconds: float) -> None:
        """A write of `nbytes` that took `seconds`."""
        if seconds > 0:
            self.bytes_per_s = nbytes / seconds

    def probe(self, nbytes: int, folder: str | None) -> float:
        """torch.save `nbytes` (at most PROBE_BYTES) into `folder`, then delete it; the seconds it took.

        The bytes are an uninitialised tensor: pages the kernel maps to its zero page as they are
        read, so the probe adds nothing to the trial's peak memory (zeros would add PROBE_BYTES).
        """
        import torch

        size = max(1, min(nbytes, self.PROBE_BYTES))
        with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-probe-", dir=folder) as scratch:
            start = time.perf_counter()
            torch.save(torch.empty(size, dtype=torch.uint8), os.path.join(scratch, "probe.pt"))
            seconds = time.perf_counter() - start
        self.note(size, seconds)
        return seconds


WRITE_SPEED = WriteSpeed()


def expected_write_s(history: list[Mapping[str, Any]], state_bytes: int, folder: str | None) -> tuple[float, float]:
    """(seconds the trial's next checkpoint should take to write, seconds spent probing for it).

    The trial's own newest write when it has one (`checkpoint_s` in `history`), else its state's
    size at this process's measured speed, probed first (once per process) when there is none.
    """
    for metrics in reversed(history):
        if "checkpoint_s" in metrics:
            return float(metrics["checkpoint_s"]), 0.0
    probe_s = 0.0 if WRITE_SPEED.bytes_per_s else WRITE_SPEED.probe(state_bytes, folder)
    speed = WRITE_SPEED.bytes_per_s
    return (state_bytes / speed if speed else 0.0), probe_s


def config_key(config: Mapping[str, Any]) -> str:
    """A short key of a trial's config, the same from Tune's dict and from its params.json."""
    plain = json.loads(json.dumps(dict(config), default=str))
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def write_meta(folder: str, epoch: int, key: str, history: list[Mapping[str, Any]]) -> None:
    """meta.json: the epoch, the config's key, and the metrics reported for epochs 1..epoch."""
    with open(os.path.join(folder, META_FILE), "w") as f:
        json.dump({"epoch": epoch, "config_key": key, "history": [dict(m) for m in history]}, f, default=str)


def read_meta(folder: str) -> dict[str, Any] | None:
    """A checkpoint folder's meta.json, or None when absent, unreadable or not of that shape."""
    try:
        with open(os.path.join(folder, META_FILE)) as f:
            meta = json.loads(f.read(50_000_000))
    except (OSError, ValueError):
        return None
    ok = isinstance(meta, dict) and isinstance(meta.get("epoch"), int) and isinstance(meta.get("config_key"), str)
    history = meta.get("history") if ok else None
    ok = isinstance(history, list) and all(isinstance(m, dict) and isinstance(m.get("epoch"), int) for m in history)
    return meta if ok else None


def newest_first(trial_dir: str, key: str) -> list[tuple[str, dict[str, Any]]]:
    """A trial's checkpoint folders for this config, newest epoch first, with their meta.json.

    Folders without a readable meta.json, or written for another config (a folder name Tune gave
    a new trial after a crash), are left out. Not yet checked: whether trainer.pt loads.
    """
    found = []
    for folder in glob.glob(os.path.join(trial_dir, "checkpoint_*")):
        meta = read_meta(folder)
        if meta is not None and meta["config_key"] == key:
            found.append((meta["epoch"], os.path.getmtime(folder), folder, meta))
    return [(folder, meta) for _, _, folder, meta in sorted(found, reverse=True)]


def read_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(path, weights_only=True)`: never an arbitrary pickle. Unreadable is a StudyError."""
    import torch

    try:
        source = io.BytesIO(read_bytes(path)) if is_uri(path) else path  # s3://...: through pyarrow
        return torch.load(source, map_location=map_location, weights_only=True)
    except StudyError:
        raise  # the storage itself: unreachable, say
    except Exception as exc:  # truncated zip, foreign pickle, missing file: all mean "corrupt"
        raise StudyError(
            f"{path}: corrupt checkpoint ({reason(exc, 100)}); delete that checkpoint_* folder "
            "to resume the trial from the one before it"
        ) from None


def prune(trial_dir: str, key: str, keep: int) -> None:
    """Empty this trial's checkpoint folders older than its newest `keep` (by epoch).

    The folders stay: Tune's saved state may still name one, and Tune refuses to restore a trial
    whose recorded checkpoint folder is gone. A resumed trial never loads them (see `resume`).
    Tune itself keeps more (see `study.tuner.TUNE_KEEP`) so that it rarely forces a state save.
    """
    for folder, _ in newest_first(trial_dir, key)[keep:]:
        for name in (CHECKPOINT_FILE, META_FILE, CHECKPOINT_SIGNATURE):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def recorded_epoch(trial_dir: str, checkpoint_path: str | None) -> int:
    """The newest epoch Tune's restored state knows for a trial: that of the checkpoint Tune
    handed over (its state, scheduler and searcher were saved together), 0 without one. When
    that checkpoint's files were pruned, the newest epoch in the trial's result.json instead."""
    if checkpoint_path is None:
        return 0
    meta = read_meta(checkpoint_path)
    if meta is not None:
        return meta["epoch"]
    epochs = [0]
    try:
        with open(os.path.join(trial_dir, "result.json")) as f:
            rows = json_lines(f.read())
    except OSError:
        rows = []
    for row in rows:
        try:
            epochs.append(int(row["epoch"]))
        except (ValueError, KeyError, TypeError):
            continue
    return max(epochs)


def checkpoints_to_resume(experiment_path: str) -> list[str]:
    """The checkpoint file each unfinished trial will try first when resumed (see the module doc).

    That is its newest by meta.json; for checkpoints written before meta.json existed, the one
    Tune's state records with the trial's last result (read as plain JSON), else the newest name.
    """
    from study.experiment_state import STATE_GLOB, trial_states

    states = sorted(glob.glob(os.path.join(experiment_path, STATE_GLOB)))
    known = trial_states(states[-1]) if states else {}
    files = []
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        name = os.path.basename(os.path.dirname(trial_dir))
        state = known.get(name, {})
        if state.get("status") == "TERMINATED":
            continue  # finished: Tune will not load it again
        newest = [folder for folder, meta in newest_by_meta(trial_dir)]
        if newest:
            files.append(os.path.join(newest[0], CHECKPOINT_FILE))
            continue
        recorded = state.get("last_result", {}).get("checkpoint_dir_name")
        if isinstance(recorded, str) and os.path.basename(recorded) == recorded:
            files.append(os.path.join(trial_dir, recorded, CHECKPOINT_FILE))
            continue
        on_disk = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
        if on_disk:
            files.append(os.path.join(on_disk[-1], CHECKPOINT_FILE))
    return files


def newest_by_meta(trial_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """newest_first for the config the trial folder's params.json holds now."""
    try:
        with open(os.path.join(trial_dir, "params.json")) as f:
            config = json.loads(f.read(10_000_000))
    except (OSError, ValueError):
        return []
    return newest_first(trial_dir, config_key(config)) if isinstance(config, dict) else []


def is_readable(path: str) -> bool:
    try:
        read_checkpoint(path)
        return True
    except StudyError:
        return False


def fallback_checkpoint(trial_dir: str, corrupt: str) -> str | None:
    """The newest readable checkpoint file of a trial older than `corrupt`, or None (start over)."""
    folder = os.path.dirname(corrupt)
    ordered = [f for f, _ in newest_by_meta(trial_dir)]
    if folder in ordered:  # by epoch
        older = ordered[ordered.index(folder) + 1 :]
    else:  # checkpoints without meta.json: by name
        name = os.path.basename(folder)
        older = sorted(p for p in glob.glob(os.path.join(trial_dir, "checkpoint_*")) if os.path.basename(p) < name)
        older.reverse()
    for candidate in older:
        path = os.path.join(candidate, CHECKPOINT_FILE)
        if is_readable(path):
            return path
    return None


def verify_checkpoints(experiment_path: str) -> list[str]:
    """Load the checkpoint every unfinished trial will resume from; say what replaces a corrupt one.

    A checkpoint can be cut short (a full disk, a crash mid-write). Its trial then resumes from
    its newest readable older checkpoint, or from the start (see `study.trainable`), so a resume
    works in one step. Returns one warning line per such trial. Local folders only (on a URI the
    trials check for themselves).
    """
    if is_uri(experiment_path):
        return []
    warnings = []
    for path in checkpoints_to_resume(experiment_path):
        if is_readable(path):
            continue
        trial_dir = os.path.dirname(os.path.dirname(path))
        fallback = fallback_checkpoint(trial_dir, path)
        instead = f"from {os.path.relpath(fallback, trial_dir)}" if fallback else "from its first epoch"
        warnings.append(
            f"{path}: unreadable checkpoint (a full disk or a crash mid-write); the trial resumes {instead}"
        )
    return warnings


def checkpoint_folders(trial_dir: str) -> list[str]:
    """A trial's checkpoint_* folders (local or URI) that hold a file to load; pruned ones hold none."""
    from study import storage

    found = []
    for name, is_dir in storage.list_dir(trial_dir):
        folder = storage.join(trial_dir, name)
        if is_dir and name.startswith("checkpoint_"):
            if any(storage.is_file(storage.join(folder, f)) for f in (CHECKPOINT_FILE, META_FILE)):
                found.append(folder)
    return sorted(found)


def unsigned_checkpoints(trial_dir: str) -> list[tuple[str, str]]:
    """(checkpoint folder, why) for each of a trial's checkpoints that this user's trial did not
    sign for it, or that changed since. A local one whose trainer.pt does not load is left out:
    nothing loads it (a resume skips it, see `verify_checkpoints`; export refuses it)."""
    from study import signing

    key = signing.secret_key()
    found = []
    for folder in checkpoint_folders(trial_dir):
        why = signing.checkpoint_problem(folder, key)
        if why and (is_uri(folder) or is_readable(os.path.join(folder, CHECKPOINT_FILE))):
            found.append((folder, why))
    return found


def unsigned_to_resume(experiment_path: str) -> list[tuple[str, str]]:
    """unsigned_checkpoints of every trial a resume may load from: all but those Tune's state
    has finished (TERMINATED). A trial folder Tune's state lacks counts: a trial it starts under
    that name looks there for checkpoints of its config (see `study.trainable.resume`)."""
    from study.experiment_state import STATE_GLOB, trial_states

    states = sorted(glob.glob(os.path.join(experiment_path, STATE_GLOB)))
    known = trial_states(states[-1]) if states else {}
    found = []
    for trial_dir in sorted(glob.glob(os.path.join(experiment_path, "*", ""))):
        name = os.path.basename(os.path.dirname(trial_dir))
        if known.get(name, {}).get("status") != "TERMINATED":
            found += unsigned_checkpoints(os.path.dirname(trial_dir))
    return found
