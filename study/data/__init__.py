"""Datasets and augmentations by YAML name (`catalog`, no torch), their loaders (`datasets`),
batch augmentation (`augment`) and the device-resident batch loader (`loader`).

Only the catalog is imported here, so that checking a study's names costs no torch import.
"""

from study.data.catalog import AUGMENTATIONS, DATASETS, is_cached

__all__ = ["AUGMENTATIONS", "DATASETS", "is_cached"]
