"""A device-resident batch loader: the dataset is one uint8 tensor, batches are index slices.

No DataLoader workers and no per-image Python: each epoch draws one `randperm` on the data's
device, and augmentation and normalisation run on whole batches there (airbench style).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from study.data.augment import augment


class BatchLoader:
    """Yield normalised float batches `(x, y)` from uint8 images `(N, 3, H, W)` on one device.

    Args:
        images: uint8 tensor (N, C, H, W), already on the target device.
        labels: int64 tensor (N,), same device.
        batch_size: images per batch.
        mean, std: per-channel statistics in [0, 1] pixel units.
        augment_name: one of `study.data.AUGMENTATIONS`; "none" for evaluation.
        generator: on the data's device; drives the shuffle and the augmentation. None = no shuffle.
        drop_last_single: drop a final batch of one image (BatchNorm cannot train on it).
        max_batches: stop the epoch after this many batches (0 = all); the order is still a
            permutation of the whole split.
        indices: without a generator, yield only these images, in this order (a fixed subset
            that is gathered batch by batch, never copied whole). None = every image.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment_name: str = "none",
        generator: torch.Generator | None = None,
        drop_last_single: bool = False,
        max_batches: int = 0,
        indices: torch.Tensor | None = None,
    ) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.augment_name = augment_name
        self.generator = generator
        self.drop_last_single = drop_last_single
        self.max_batches = max_batches
        if indices is not None and generator is not None:
            raise ValueError("indices are for a fixed, unshuffled subset: pass no generator")
        self.indices = indices
        dev = images.device
        std_t = torch.tensor(std, device=dev).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, device=dev).view(1, -1, 1, 1)
        # x_float = (x_uint8 / 255 - mean) / std, folded into one multiply-add per pixel.
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __len__(self) -> int:
        n, bs = len(self.labels) if self.indices is None else len(self.indices), self.batch_size
        batches = (n + bs - 1) // bs
        if self.drop_last_single and n % bs == 1 and batches > 1:
            batches -= 1
        return min(batches, self.max_batches) if self.max_batches else batches

    def order(self) -> torch.Tensor:
        """This epoch's permutation of indices (identity when not shuffling)."""
        n, dev = len(self.labels), self.labels.device
        if self.indices is not None:
            return self.indices
        if self.generator is None:
            return torch.arange(n, device=dev)
        return torch.randperm(n, generator=self.generator, device=dev)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images.index_select(0, idx)  # (B, C, H, W) uint8; faster than images[idx]
            if self.augment_name != "none":
                x = augment(x, self.augment_name, self.generator)
            yield x.float() * self.scale + self.shift, self.labels.index_select(0, idx)
