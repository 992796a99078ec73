"""The datasets and augmentations by the names the YAML files use; no torch at import.

Each dataset entry says what it is (its docstring, for `study datasets`), what its data is made
from (`source_key`, the key of this machine's cache, see `study.data.cache`), and loads it by
calling `study.data.sources`, which imports torch. So the driver checks names, and finds a
dataset already cached on this machine, without importing torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING

from study.data.cache import cache_path, source_key, tree_key
from study.registry import Registry

if TYPE_CHECKING:
    from study.data.image_data import ImageData

AUGMENTATIONS = ("none", "flip", "crop", "flip+crop")  # see study.data.augment

Loader = Callable[..., "ImageData"]
DATASETS: Registry[Loader] = Registry("dataset")


def is_cached(name: str, data_dir: str, num_train: int = 0, num_test: int = 0) -> bool:
    """Whether this machine's cache holds dataset `name` from its current source (not read here)."""
    path = cache_path(name, DATASETS.get(name), os.path.expanduser(data_dir), num_train=num_train, num_test=num_test)
    return path is not None and os.path.isfile(path)


def split_sizes(train: int, test: int) -> Callable[[Loader], Loader]:
    """Mark a dataset of fixed size: `num_train`/`num_test` above it are refused before any run
    (a subset asks for at most what there is; more would train on less than the config says)."""

    def mark(loader: Loader) -> Loader:
        loader.split_sizes = (train, test)
        return loader

    return mark


def cifar_source(name: str) -> Callable[..., str | None]:
    """CIFAR's extracted batch files (the folder names are torchvision's `base_folder`)."""
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    return lambda *, data_dir, **_: tree_key(os.path.join(data_dir, folder))


@DATASETS.register("cifar100")
@split_sizes(50_000, 10_000)
@source_key(cifar_source("cifar100"))
def cifar100(*, data_dir: str, **_: int) -> ImageData:
    """CIFAR-100 (50k/10k, 100 classes) via torchvision, downloaded once to --data-dir."""
    from study.data.sources import load_cifar

    return load_cifar("cifar100", data_dir)


@DATASETS.register("cifar10")
@split_sizes(50_000, 10_000)
@source_key(cifar_source("cifar10"))
def cifar10(*, data_dir: str, **_: int) -> ImageData:
    """CIFAR-10 (50k/10k, 10 classes) via torchvision, downloaded once to --data-dir."""
    from study.data.sources import load_cifar

    return load_cifar("cifar10", data_dir)


@DATASETS.register("digits")
@split_sizes(1347, 450)  # the fixed stratified 75/25 split of 1797 images (datasets.load_digits)
@source_key(lambda **_: f"scikit-learn {version('scikit-learn')}, digits/1")
def digits(**_: object) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), upsampled to 32x32 RGB; offline."""
    from study.data.sources import load_digits

    return load_digits()


@DATASETS.register("synthetic")
@source_key(lambda *, num_train=0, num_test=0, **_: f"synthetic/1 {num_train or 2048} {num_test or 512}")
def synthetic(*, num_train: int = 0, num_test: int = 0, **_: object) -> ImageData:
    """Random class-conditional 32x32 images, 10 classes, any size (num_train/num_test; 2048/512)."""
    from study.data.sources import load_synthetic

    return load_synthetic(num_train or 2048, num_test or 512)


@DATASETS.register("imagefolder")
@source_key(lambda *, data_dir, **_: tree_key(os.path.join(data_dir, "train"), os.path.join(data_dir, "test")))
def imagefolder(*, data_dir: str, **_: object) -> ImageData:
    """Your own images: DATA_DIR/train/<class>/* and DATA_DIR/test/<class>/*, resized to 32x32."""
    from study.data.sources import load_imagefolder

    return load_imagefolder(data_dir)
