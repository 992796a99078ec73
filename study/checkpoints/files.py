"""Checkpoint folders on disk: trainer.pt read safely (tensors and plain containers only), meta.json, pruning.

Every checkpoint folder holds the trainer's state (`trainer.pt`), a small `meta.json` (the
epoch it holds, a key of the trial's config, and the metrics of every epoch up to it) and
its signature (`study.trust.signing`).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from collections.abc import Mapping
from typing import Any

from study.errors import StudyError, reason
from study.names import CHECKPOINT_FILE, CHECKPOINT_SIGNATURE, META_FILE
from study.storage import is_uri, read_bytes


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
    Tune itself keeps more (see `study.tuning.tuner.TUNE_KEEP`) so that it rarely forces a state save.
    """
    for folder, _ in newest_first(trial_dir, key)[keep:]:
        for name in (CHECKPOINT_FILE, META_FILE, CHECKPOINT_SIGNATURE):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


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
