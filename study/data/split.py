"""The validation split: how many train images a `val_size` holds out, and which ones.

The split depends only on the data and `split_seed`, never on a trial's seed, so every trial
of a study, and every study on the same data, validates on the same images. No torch import
here until a split is made: the driver computes counts without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def val_count(val_size: float, train_images: int) -> int:
    """Images held out: `val_size` below 1 is a fraction of `train_images` (at least 1), else a count."""
    if val_size >= 1:
        return int(val_size)
    return max(1, round(val_size * train_images)) if val_size > 0 else 0


def hold_out(
    x: torch.Tensor, y: torch.Tensor, count: int, split_seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y): the first `count` images of a fixed shuffle held out.

    The images left to train on keep their order, so a later cut (num_train) is as before.
    """
    import torch

    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    val, rest = order[:count], order[count:].sort().values
    return x[rest], y[rest], x[val], y[val]
