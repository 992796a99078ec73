"""The one typed config of a trial. Every input path (YAML, CLI, Tune's `config`) ends here.

`TrialConfig.from_dict` is the only place a raw mapping becomes a config: unknown keys,
wrong types and out-of-range values are rejected with a one-line `StudyError` that names
the source and key, so nothing bad reaches a trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from study.checks import count, in_range, one_of, option, parse_dataclass
from study.data import AUGMENTATIONS, DATASETS
from study.models import MODELS
from study.names import META_KEY, VARIANT_KEY

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")

# Upper bounds keep a typo (channels: 1000000000, a 300 GB allocation) from reaching a trial.
# They sit far above anything the report runs (conv width 1024, FC 8192, batch 256).
MAX_WIDTH = 16384
MAX_IMAGES = 100_000_000
MAX_SEED = 2**32 - 1  # numpy's and most samplers' seed range


def _val_size(v: float) -> str | None:
    """A fraction of the train split in [0, 1), or a whole count of images (0 = no split)."""
    if v < 0 or v > MAX_IMAGES or (v >= 1 and not float(v).is_integer()):
        return "a fraction in [0, 1) of the train split, or a whole count of images (0 = none)"
    return None


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs. Defaults follow the report (CIFAR-100, batch 256, 20 epochs)."""

    # --- model (keys of the model registry; each model reads only its own options)
    model: str = option("cnn", one_of(MODELS.names))
    hidden: int = option(4096, count(1, MAX_WIDTH))  # mlp: width of both hidden layers (report: 4096)
    channels: int = option(128, count(1, MAX_WIDTH // 8))  # cnn: conv width C; the last conv has 2C (report: 128)
    batch_norm: bool = option(False)  # cnn: BatchNorm2d after every conv
    fc_width: int = option(4096, count(1, MAX_WIDTH))  # cnn: hidden fully connected width (report: 4096)
    dropout: float = option(0.0, in_range(0, 0.99, what="a probability"))  # cnn: dropout before the last FC; 0 = off
    pretrained: bool = option(False)  # resnet18: start from torchvision's ImageNet weights
    input_size: int = option(
        32, in_range(32, 512, what="an image side")
    )  # resnet18: upsample 32x32 inputs to this side

    # --- data
    dataset: str = option("cifar100", one_of(DATASETS.names))
    data_dir: str = option("~/.cache/cifar-study")  # where CIFAR is downloaded / cached
    augment: str = option("none", one_of(AUGMENTATIONS))  # none | flip | crop | flip+crop
    num_train: int = option(0, count(0, MAX_IMAGES))  # images in the train split; 0 = all (synthetic: 2048)
    num_test: int = option(0, count(0, MAX_IMAGES))  # images in the test split; 0 = all (synthetic: 512)
    # Held out of the train split for selection (ASHA, TPE, best trial/epoch, export): a
    # fraction (0.1 = 10%) or a count. 0 trains on the whole split, as the report did.
    val_size: float = option(0.1, _val_size)
    split_seed: int = option(0, count(0, MAX_SEED))  # which images are held out; never the trial's seed

    # --- optimisation
    optimizer: str = option("adam", one_of(OPTIMIZERS))
    lr: float = option(1e-4, in_range(0, low_open=True))  # per step, not scaled with batch size
    momentum: float = option(0.9, in_range(0, 0.999, what="a momentum"))  # sgd only
    weight_decay: float = option(0.0, in_range(0))  # L2, as torch.optim applies it
    batch_size: int = option(256, count(1, 65536))  # images per optimiser step
    eval_batch_size: int = option(256, count(1, 65536))  # images per forward pass in evaluation (peak memory)
    epochs: int = option(20, count(1, 10_000))  # full passes over the train split
    max_steps_per_epoch: int = option(0, count(0, 10**9))  # cap steps per epoch (0 = whole split); smoke tests
    seed: int = option(0, count(0, MAX_SEED))  # model init, batch order and augmentation
    # Epochs between checkpoints; the last epoch is always saved. 0 (auto): every epoch while
    # writing one costs at most 5% of the training since the last, else as soon as the training
    # since pays for one (the width-1024 CNN with Adam is ~2 GB per checkpoint); a resume then
    # repeats at most the epoch in flight, or the training worth 20 checkpoint writes. N: every
    # N epochs, at the cost of up to N epochs repeated after a crash.
    checkpoint_every: int = option(0, count(0, 10_000))

    # --- speed (see docs/performance.md)
    device: str = option("auto", one_of(DEVICES))  # auto = cuda when the trial has a GPU
    precision: str = option("auto", one_of(PRECISIONS))  # auto = bf16 autocast on cuda, else fp32
    channels_last: bool | None = option(None)  # None = on for conv nets on cuda
    cudnn_benchmark: bool = option(True)  # let cuDNN pick the fastest conv kernels (cuda only)
    compile: bool = option(False)  # torch.compile the model (slow first epoch, faster after)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], source: str | None = None, section: str | None = None, label: str | None = None
    ) -> TrialConfig:
        """Check and convert a mapping (see `study.checks.parse_dataclass`).

        Errors read "SOURCE: SECTION.KEY: expected ..., got ..." (e.g. "x.yaml: space.lr: ...");
        `label`, when given, replaces "SECTION.KEY" (e.g. "space.lr.grid").
        """
        return parse_dataclass(cls, raw, source, section, label)

    @classmethod
    def from_tune(cls, config: Mapping[str, Any], source: str = "trial config") -> TrialConfig:
        """Tune's config -> TrialConfig: drop the metadata and the variant's name; None is a default.

        Older experiments nested a variant's fields under VARIANT_KEY ({"name": ..., **fields}).
        """
        variant = config.get(VARIANT_KEY)
        nested = dict(variant) if isinstance(variant, Mapping) else {}
        nested.pop("name", None)
        raw = {k: v for k, v in config.items() if k not in (META_KEY, VARIANT_KEY) and v is not None}
        return cls.from_dict({**raw, **nested}, source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_kwargs(self, weights_from_checkpoint: bool = False) -> dict[str, Any]:
        """The options the chosen model's factory takes, read from this config.

        `weights_from_checkpoint`: the weights come from elsewhere (an exported file, a size
        estimate), so ImageNet weights are not to be loaded (`pretrained` is set false).
        """
        kwargs = {name: getattr(self, name) for name in MODELS.options(self.model)}
        if weights_from_checkpoint and "pretrained" in kwargs:
            kwargs["pretrained"] = False
        return kwargs

    def data_kwargs(self) -> dict[str, Any]:
        """The arguments of `study.data.datasets.load_dataset` for this trial's data."""
        return {
            "name": self.dataset,
            "data_dir": self.data_dir,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "val_size": self.val_size,
            "split_seed": self.split_seed,
        }


def variant_name(config: Mapping[str, Any]) -> str | None:
    """The trial's variant in Tune's config, by the name the file gives it; None without variants."""
    variant = config.get(VARIANT_KEY)
    if isinstance(variant, Mapping):
        variant = variant.get("name")
    return None if variant is None else str(variant)
