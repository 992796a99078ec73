"""Dataset loaders. Every dataset loads to uint8 tensors (N, 3, 32, 32) and int64 labels.

The registry of names (`study.data.catalog.DATASETS`) calls these. Each runs once per machine
for a given source (its result is cached and memory-mapped, see `study.data.cache`) and is held
once per worker process (see `load_dataset`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from study.data.cache import load_cached, undo_first_load
from study.data.catalog import DATASETS, OFFLINE_DATASETS
from study.data.split import hold_out, val_count
from study.errors import StudyError, reason

if TYPE_CHECKING:
    from study.config import TrialConfig


@dataclass(frozen=True)
class ImageData:
    """A train/test split held as uint8 image tensors, with per-channel stats of the train split."""

    train_x: torch.Tensor  # (N, 3, 32, 32) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor  # (M, 3, 32, 32) uint8
    test_y: torch.Tensor  # (M,) int64
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1]
    std: tuple[float, ...]
    val_x: torch.Tensor | None = None  # (V, 3, 32, 32) uint8, held out of the train split; None = no split
    val_y: torch.Tensor | None = None  # (V,) int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (normalisation is per dataset).

    Summed in chunks, in float64: a float copy of 50k CIFAR images would be 600 MB of peak memory; a chunk is 25 MB.
    """
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).transpose(0, 1).reshape(images.shape[1], -1)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
    n = images.numel() / images.shape[1]
    mean = total / n
    std = ((total_sq / n - mean**2) * n / max(n - 1, 1)).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).clamp_min(1e-3).tolist())


def image_data(train_x, train_y, test_x, test_y, classes, val_x=None, val_y=None) -> ImageData:
    """An ImageData with the train split's channel stats and int64 labels."""
    mean, std = channel_stats(train_x)
    val_y = None if val_y is None else val_y.long()
    return ImageData(train_x, train_y.long(), test_x, test_y.long(), tuple(classes), mean, std, val_x, val_y)


def subset(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` images of a fixed shuffle (seed 0), so every trial sees the same subset."""
    if n <= 0 or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    return x[idx], y[idx]


@functools.lru_cache(maxsize=2)
def load_dataset(
    name: str,
    data_dir: str = "~/.cache/cifar-study",
    num_train: int = 0,
    num_test: int = 0,
    val_size: float = 0.0,
    split_seed: int = 0,
) -> ImageData:
    """Load dataset `name`: a validation split held out of train, then cut to `num_train`/`num_test`.

    `val_size` is a fraction of the train split or a count (0 = no validation split, the whole
    split trains); see `hold_out`. `num_train` then takes its images (0 = all) from what is left.
    Cached per process (a Ray worker that runs several trials holds each dataset once) and per
    machine (`study.data.cache`: a new worker memory-maps what the first load wrote). A cut
    takes its images from the whole split, so one cache serves every num_train.
    """
    loader, data_dir = DATASETS.get(name), os.path.expanduser(data_dir)
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise StudyError(f"data_dir: {data_dir} is a file; expected a folder (for the dataset and its cache)")
    data = load_cached(name, loader, data_dir, num_train=num_train, num_test=num_test)
    train_x, train_y, val_x, val_y = data.train_x, data.train_y, None, None
    count = val_count(val_size, len(train_y))
    if count >= len(train_y):
        raise StudyError(
            f"val_size: {val_size:g} holds out {count} of the {len(train_y)} {name} train images; leave some to train on"
        )
    if count:
        train_x, train_y, val_x, val_y = hold_out(train_x, train_y, count, split_seed)
    train_x, train_y = subset(train_x, train_y, num_train)
    test_x, test_y = subset(data.test_x, data.test_y, num_test)
    if not count and len(train_y) == len(data.train_y) and len(test_y) == len(data.test_y):
        return data
    return image_data(train_x, train_y, test_x, test_y, data.classes, val_x, val_y)


def trial_data(cfg: TrialConfig) -> ImageData:
    """The data one trial trains, validates and tests on (see `load_dataset`)."""
    return load_dataset(cfg.dataset, cfg.data_dir, cfg.num_train, cfg.num_test, cfg.val_size, cfg.split_seed)


# --- torchvision CIFAR -------------------------------------------------------------------


def load_cifar(name: str, data_dir: str) -> ImageData:
    """Download (once per machine, under a file lock) and load CIFAR-10/100 via torchvision."""
    from filelock import FileLock
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    lock = os.path.join(data_dir, f"{name}.lock")
    try:
        os.makedirs(data_dir, exist_ok=True)
        # Parallel trials on one node wait here; the first downloads, the rest find the files
        # and torchvision verifies their MD5 sums.
        with FileLock(lock):
            train = cls(data_dir, train=True, download=True)
            test = cls(data_dir, train=False, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        undo_first_load(lock)  # a failed load leaves nothing of its own behind
        raise StudyError(
            f"dataset {name}: not found in {data_dir} and the download failed ({reason(exc)}); "
            f"put {cls.filename} ({cls.url}) in that folder, pass --data-dir, "
            f"or use an offline dataset: {OFFLINE_DATASETS}"
        ) from None

    def to_tensor(split) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW uint8
        return x, torch.tensor(split.targets)

    return image_data(*to_tensor(train), *to_tensor(test), train.classes)


# --- offline datasets --------------------------------------------------------------------


def load_digits() -> ImageData:
    """scikit-learn's bundled 8x8 digits, upsampled to 32x32 RGB, in a fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0,1]
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target)
    # A fixed, stratified 75/25 split: the same for every trial and every machine.
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.25, stratify=bunch.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    classes = [str(c) for c in bunch.target_names]
    return image_data(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], classes)


def synthetic_images(n: int, num_classes: int, seed: int, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` class-conditional images: a smooth per-class prototype plus per-image noise.

    Prototypes are fixed (seed 1234) so train and test share them; `seed` only changes the
    noise and labels. The signal is learnable but not trivial: noise std is about the
    prototypes' own spread. Made in chunks, so the float noise never costs more than a chunk.
    """
    proto_gen = torch.Generator().manual_seed(1234)
    protos = torch.randn(num_classes, 3, 4, 4, generator=proto_gen)
    protos = F.interpolate(protos, size=32, mode="bilinear", align_corners=False)  # (K, 3, 32, 32)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, n, chunk):
        y = labels[start : start + chunk]
        x = protos[y] + torch.randn(len(y), 3, 32, 32, generator=gen)
        images[start : start + chunk] = (x * 40 + 128).round_().clamp_(0, 255).to(torch.uint8)
    return images, labels


def load_synthetic(n_train: int, n_test: int) -> ImageData:
    """Random class-conditional 32x32 images, 10 classes (see `synthetic_images`)."""
    train_x, train_y = synthetic_images(n_train, 10, seed=0)
    test_x, test_y = synthetic_images(n_test, 10, seed=1)
    return image_data(train_x, train_y, test_x, test_y, [f"class{i}" for i in range(10)])


def load_image(folder, index: int) -> torch.Tensor:
    """One image of an ImageFolder; an unreadable file (truncated, empty, not an image) names itself."""
    try:
        image, _ = folder[index]
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for broken files
        raise StudyError(f"dataset imagefolder: {folder.samples[index][0]}: unreadable image ({reason(exc)})") from None
    return image


def decode_split(root: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of one split as uint8 (N, 3, 32, 32), with their class indices and class names."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(
            root, transform=transforms.Compose([transforms.Resize((32, 32)), transforms.PILToTensor()])
        )
    except (FileNotFoundError, OSError) as exc:
        raise StudyError(f"dataset imagefolder: {root}: {exc} (expected {root}/<class>/<image>)") from None
    if len(folder.classes) < 2:
        raise StudyError(
            f"dataset imagefolder: {root}: {len(folder.classes)} class folder(s); a classifier needs at least 2"
        )
    images = torch.stack([load_image(folder, i) for i in range(len(folder))])  # (N, 3, 32, 32) uint8
    return images, torch.tensor(folder.targets), folder.classes


def load_imagefolder(data_dir: str) -> ImageData:
    """DATA_DIR/train/<class>/* and DATA_DIR/test/<class>/*, resized to 32x32."""
    splits = {split: decode_split(os.path.join(data_dir, split)) for split in ("train", "test")}
    if splits["train"][2] != splits["test"][2]:
        raise StudyError(f"dataset imagefolder: {data_dir}: train and test have different class folders")
    return image_data(*splits["train"][:2], *splits["test"][:2], splits["train"][2])
