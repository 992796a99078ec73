"""A trial's data: a dataset by its registry name, from this machine's cache, split and cut.

`load_dataset` looks the name up in the catalog, loads it through the machine cache
(`study.data.cache`), holds the validation split out (`study.data.split`) and cuts the rest
to `num_train`/`num_test`. Each process holds a dataset once (a reused Ray worker too).
"""

from __future__ import annotations

import functools
import os

import torch

from study.data.cache import load_cached
from study.data.catalog import DATASETS
from study.data.image_data import ImageData, image_data
from study.data.split import hold_out, val_count
from study.errors import StudyError


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
