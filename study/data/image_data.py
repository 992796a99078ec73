"""A dataset in memory: train/test (and validation) uint8 image tensors with their classes and stats.

No torch import at module level: the machine cache and the catalog name this type without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


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
    import torch

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
