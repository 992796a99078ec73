"""Load each dataset once per machine: a loaded `ImageData` is saved to one file and memory-mapped.

A dataset loader (sklearn's digits, torchvision's CIFAR, an ImageFolder of JPEGs) costs a
library import and a decode, 1-3 s or more, in every new worker process. The first load on a
machine writes the result, uint8 tensors with classes and channel stats, to
`CACHE/datasets/NAME-KEY.pt`; every later process memory-maps it (`torch.load(mmap=True,
weights_only=True)`: tensors and plain values only, never a pickle) and shares its pages.

CACHE is `$STUDY_CACHE_DIR`, else `$XDG_CACHE_HOME/cifar-study` (`~/.cache/cifar-study`):
never the user's data folder, which may be read-only or shared. KEY is a digest of where the
data is and what it was made from, given by the loader's `source_key`: its source files' names,
sizes and modification times, or its version and parameters. Any change there is a new key, so
a new load. A loader without a `source_key` is not cached.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from study.data.image_data import ImageData

FORMAT = "study-imagedata/2"  # bump when what a cache file holds, or how a loader builds it, changes


def source_key(key: Callable[..., str | None]) -> Callable[[Callable], Callable]:
    """Mark a dataset loader as cacheable: `key(data_dir=..., num_train=..., num_test=...)` names
    its source (None when the source is not there yet, e.g. CIFAR before its download)."""

    def mark(loader: Callable) -> Callable:
        loader.source_key = key
        return loader

    return mark


def tree_key(*roots: str) -> str | None:
    """Every file under `roots`, with its size and modification time; None if a root is missing."""
    lines = []
    for root in roots:
        if not os.path.isdir(root):
            return None
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                info = os.stat(path)
                lines.append(f"{os.path.relpath(path, root)}|{info.st_size}|{info.st_mtime_ns}")
    return "\n".join(lines)


def cache_root() -> str:
    """$STUDY_CACHE_DIR, else $XDG_CACHE_HOME/cifar-study (XDG's default: ~/.cache/cifar-study)."""
    if os.environ.get("STUDY_CACHE_DIR"):
        return os.path.abspath(os.path.expanduser(os.environ["STUDY_CACHE_DIR"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cifar-study")


def dataset_cache_dir() -> str:
    return os.path.join(cache_root(), "datasets")


def digest(name: str, data_dir: str, key: str) -> str:
    """The cache key: the format, the dataset, where its data is, and what it was made from."""
    return hashlib.sha256(f"{FORMAT}\n{name}\n{os.path.realpath(data_dir)}\n{key}".encode()).hexdigest()[:32]


def read(path: str) -> dict[str, Any] | None:
    """A cache file's fields, memory-mapped; None if absent, cut short or not as expected."""
    import torch

    try:
        fields = torch.load(path, mmap=True, weights_only=True)
        splits = [(fields[f"{s}_x"], fields[f"{s}_y"]) for s in ("train", "test")]
        classes, mean, std = list(fields["classes"]), tuple(fields["mean"]), tuple(fields["std"])
    except Exception:  # absent, truncated, or not ours: load the dataset again
        return None
    for x, y in splits:
        if (
            x.dtype != torch.uint8
            or x.dim() != 4
            or x.shape[1] != 3
            or y.dtype != torch.int64
            or y.shape != x.shape[:1]
        ):
            return None
    if not all(isinstance(c, str) for c in classes) or len(mean) != 3 or len(std) != 3:
        return None
    if any(len(y) and not 0 <= int(y.min()) <= int(y.max()) < len(classes) for _, y in splits):
        return None  # a label with no class: not a file this code wrote
    return {"train_x": splits[0][0], "train_y": splits[0][1], "test_x": splits[1][0], "test_y": splits[1][1],
            "classes": tuple(classes), "mean": mean, "std": std}  # fmt: skip


def write(path: str, data: ImageData) -> None:
    """Atomically (a temporary file, then a rename); a full or read-only disk only skips the cache."""
    import torch

    tmp = f"{path}.tmp-{os.getpid()}"
    fields = {f: getattr(data, f) for f in ("train_x", "train_y", "test_x", "test_y")}
    fields.update(classes=list(data.classes), mean=list(data.mean), std=list(data.std))
    try:
        torch.save(fields, tmp)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)


def undo_first_load(lock_path: str, *folders: str) -> None:
    """After a failed first load: no lock file, and none of `folders` (innermost first) left empty."""
    if os.path.exists(lock_path):
        os.remove(lock_path)
    for folder in folders:
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)


def cache_path(name: str, loader: Callable[..., Any], data_dir: str, **kwargs: int) -> str | None:
    """Where this machine caches `loader`'s data from its source as it is now (whether the file
    exists or not); None for a loader without a `source_key`, or whose source is not there yet."""
    key_of: Callable[..., str | None] | None = getattr(loader, "source_key", None)
    key = None if key_of is None else key_of(data_dir=data_dir, **kwargs)
    return None if key is None else os.path.join(dataset_cache_dir(), f"{name}-{digest(name, data_dir, key)}.pt")


def load_cached(name: str, loader: Callable[..., ImageData], data_dir: str, **kwargs: int) -> ImageData:
    """`loader(data_dir=data_dir, **kwargs)`, from this machine's cache when its source is unchanged.

    Parallel first loads wait on a file lock while one loads. A cache folder that cannot be
    written (or that is not a folder) means a load every time, without a cache.
    """
    from filelock import FileLock

    if getattr(loader, "source_key", None) is None:
        return loader(data_dir=data_dir, **kwargs)
    cache_dir = dataset_cache_dir()
    before = cache_path(name, loader, data_dir, **kwargs)
    if before is not None and (fields := read(before)) is not None:
        return ImageData(**fields)
    lock_path = os.path.join(cache_dir, f"{name}.lock")
    made_data_dir = not os.path.exists(data_dir)
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        lock = FileLock(lock_path)
        lock.acquire()
    except OSError:  # no room for a cache: load without one
        return loader(data_dir=data_dir, **kwargs)
    try:
        if before is not None and (fields := read(before)) is not None:  # another process loaded it
            return ImageData(**fields)
        try:
            data = loader(data_dir=data_dir, **kwargs)
        except Exception:
            lock.release()
            undo_first_load(lock_path, *([data_dir] if made_data_dir else []))
            raise
        after = cache_path(name, loader, data_dir, **kwargs)
        if after is not None and before in (None, after):  # unchanged while it loaded
            write(after, data)
        return data
    finally:
        lock.release()
