"""Our device-resident batch loader against torchvision's DataLoader + PIL transforms.

Same 50k CIFAR-sized uint8 images, same augmentation (RandomCrop(32, padding=4),
RandomHorizontalFlip), same normalisation, batch 256. The DataLoader gets 2 workers, as
torchvision's CIFAR examples use. Only the data path is timed: no model.
Target: >= 5x the DataLoader's images/s on CPU.

    python -m benchmarks.data_path [--num-images 50000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import Goal, add_out_option, met, record


class PILDataset:
    """What torchvision's CIFAR dataset does per item: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images_hwc, labels, transform) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def time_epochs(iterable_factory, epochs: int) -> float:
    """Images per second over `epochs` full passes (each batch is touched, as training would)."""
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in iterable_factory():
            seen += len(y)
            _ = float(x[0, 0, 0, 0])  # make sure the batch really exists
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=50000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    add_out_option(parser)
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from study.data.image_data import channel_stats
    from study.data.loader import BatchLoader
    from study.data.sources import synthetic_images

    images, labels = synthetic_images(args.num_images, 100, seed=0)  # (N, 3, 32, 32) uint8
    mean, std = channel_stats(images)

    ours = BatchLoader(images, labels, 256, mean, std, "flip+crop", torch.Generator().manual_seed(0))
    ours_ips = time_epochs(lambda: ours, args.epochs)

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = PILDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), tf)
    loader = DataLoader(dataset, batch_size=256, shuffle=True, num_workers=args.workers, persistent_workers=True)
    torch_ips = time_epochs(lambda: loader, args.epochs)

    ratio = ours_ips / torch_ips
    rows = [
        {
            "loader": f"torchvision DataLoader + PIL transforms ({args.workers} workers)",
            "images/s": f"{torch_ips:,.0f}",
        },
        {"loader": "study BatchLoader (uint8 tensor, batched flip+crop+normalise)", "images/s": f"{ours_ips:,.0f}"},
    ]
    goal = Goal(
        id="data-path",
        name="batch loader vs torchvision DataLoader",
        target=f">= 5x images/s on CPU ({args.workers} DataLoader workers)",
        figure=f"{ratio:.1f}x ({ours_ips:,.0f} vs {torch_ips:,.0f} images/s)",
        measured={
            "speedup": round(ratio, 1),
            "batchloader_images_per_s": round(ours_ips),
            "dataloader_images_per_s": round(torch_ips),
        },
        verdict=met(ratio >= 5),
    )
    notes = (
        f"{args.num_images} CIFAR-sized uint8 images, batch 256, flip+crop+normalise, {args.epochs} epochs each, CPU."
    )
    record("data_path", "Data path", [goal], rows, notes, args.out)


if __name__ == "__main__":
    main()
