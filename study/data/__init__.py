"""Datasets (a registry keyed by YAML name), batch augmentation and the device-resident loader."""

from study.data.augment import AUGMENTATIONS, augment
from study.data.datasets import DATASETS, ImageData, load_dataset
from study.data.loader import BatchLoader

__all__ = ["AUGMENTATIONS", "DATASETS", "BatchLoader", "ImageData", "augment", "load_dataset"]
