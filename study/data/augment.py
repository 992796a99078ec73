"""Batch-level augmentation: pure functions of (uint8 batch, generator) on any device.

Every function takes a whole batch `x` of shape (B, C, H, W) and draws its randomness from an
explicit `torch.Generator` that lives on `x.device`, so the same code runs on CPU and GPU and a
run is reproducible from its seed. The `*_at` variants take the random draws as arguments; the
tests compare them with torchvision's per-image functional ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from study.data.catalog import AUGMENTATIONS

CROP_PADDING = 4  # pixels of zero padding on each side, as RandomCrop(32, padding=4)


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose `mask` (B,) entry is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image with probability 1/2 (RandomHorizontalFlip)."""
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return flip_where(x, mask)


def crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int = CROP_PADDING) -> torch.Tensor:
    """Zero-pad by `padding` and cut an HxW window at per-image offsets `top`, `left` (B,).

    Two `gather`s instead of a Python loop over images: first the H rows of each image's
    window, then its W columns (about 2x faster on CPU than one 4-index advanced-indexing gather).
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p), zeros
    rows = top.view(b, 1) + torch.arange(h, device=x.device)  # (B, H)
    x = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * padding))  # (B, C, H, W+2p)
    cols = left.view(b, 1) + torch.arange(w, device=x.device)  # (B, W)
    return x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))  # (B, C, H, W)


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """RandomCrop(H, padding=`padding`): a uniformly placed window of the zero-padded image."""
    top, left = torch.randint(0, 2 * padding + 1, (2, x.shape[0]), generator=generator, device=x.device)
    return crop_at(x, top, left, padding)


def augment(x: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """Apply the augmentation `name` (one of AUGMENTATIONS) to a batch."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment is {name!r}, but must be one of {', '.join(AUGMENTATIONS)}")
    if "crop" in name:
        x = random_crop(x, generator)
    if "flip" in name:
        x = random_flip(x, generator)
    return x
