"""Dataset sources: torchvision's CIFAR, scikit-learn's digits, synthetic images, an image folder.

Each loads a whole dataset to uint8 tensors (N, 3, 32, 32) and int64 labels. The registry of
names (`study.data.catalog.DATASETS`) calls these; `study.data.datasets` caches what they load.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from study.data.cache import undo_first_load
from study.data.image_data import ImageData, image_data
from study.errors import StudyError, reason

OFFLINE_DATASETS = "digits (embedded), synthetic, imagefolder"


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
