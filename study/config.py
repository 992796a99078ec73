"""The one typed config of a trial. Every input path (YAML, CLI, Tune's `config`) ends here.

`TrialConfig.from_dict` is the only place a raw mapping becomes a config: unknown keys,
wrong types and out-of-range values are rejected with a one-line `StudyError` that names
the source and key, so nothing bad reaches a trial.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from study.data import AUGMENTATIONS, DATASETS
from study.errors import StudyError, where
from study.models import MODELS

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def _positive(v: Any) -> str | None:
    return None if v > 0 else "a value > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a value >= 0"


def _probability(v: Any) -> str | None:
    return None if 0 <= v < 1 else "a probability in [0, 1)"


def _one_of(names: Callable[[], list[str]] | tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        known = list(names() if callable(names) else names)
        return None if v in known else "one of " + ", ".join(known)

    return check


def _input_size(v: Any) -> str | None:
    return None if v >= 32 else "an image side >= 32 (32 = native, 224 = ImageNet size)"


def _opt(default: Any, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"check": check})


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs. Defaults follow the report (CIFAR-100, batch 256, 20 epochs)."""

    # --- model (keys of the model registry; each model reads only its own options)
    model: str = _opt("cnn", _one_of(MODELS.names))
    hidden: int = _opt(4096, _positive)  # mlp: width of both hidden layers (report: 4096)
    channels: int = _opt(128, _positive)  # cnn: conv width C; the last conv has 2C (report: 128)
    batch_norm: bool = _opt(False)  # cnn: BatchNorm2d after every conv
    fc_width: int = _opt(4096, _positive)  # cnn: hidden fully connected width (report: 4096)
    dropout: float = _opt(0.0, _probability)  # cnn: dropout before the last FC; 0 = off
    pretrained: bool = _opt(False)  # resnet18: start from torchvision's ImageNet weights
    input_size: int = _opt(32, _input_size)  # resnet18: upsample 32x32 inputs to this side

    # --- data
    dataset: str = _opt("cifar100", _one_of(DATASETS.names))
    data_dir: str = _opt("~/.cache/cifar-study")  # where CIFAR is downloaded / cached
    augment: str = _opt("none", _one_of(AUGMENTATIONS))  # none | flip | crop | flip+crop
    num_train: int = _opt(0, _non_negative)  # images in the train split; 0 = all (synthetic: 2048)
    num_test: int = _opt(0, _non_negative)  # images in the test split; 0 = all (synthetic: 512)

    # --- optimisation
    optimizer: str = _opt("adam", _one_of(OPTIMIZERS))
    lr: float = _opt(1e-4, _positive)  # per step, not scaled with batch size
    momentum: float = _opt(0.9, _probability)  # sgd only
    weight_decay: float = _opt(0.0, _non_negative)  # L2, as torch.optim applies it
    batch_size: int = _opt(256, _positive)  # images per optimiser step
    eval_batch_size: int = _opt(1024, _positive)  # images per forward pass in evaluation
    epochs: int = _opt(20, _positive)  # full passes over the train split
    max_steps_per_epoch: int = _opt(0, _non_negative)  # cap steps per epoch (0 = whole split); smoke tests
    seed: int = _opt(0, _non_negative)  # model init, batch order and augmentation

    # --- speed (see README "Speed")
    device: str = _opt("auto", _one_of(DEVICES))  # auto = cuda when the trial has a GPU
    precision: str = _opt("auto", _one_of(PRECISIONS))  # auto = bf16 autocast on cuda, else fp32
    channels_last: bool | None = _opt(None)  # None = on for conv nets on cuda
    cudnn_benchmark: bool = _opt(True)  # let cuDNN pick the fastest conv kernels (cuda only)
    compile: bool = _opt(False)  # torch.compile the model (slow first epoch, faster after)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], source: str | None = None, section: str | None = None, label: str | None = None
    ) -> "TrialConfig":
        """Check and convert a mapping.

        Errors read "SOURCE: SECTION.KEY: expected ..., got ..." (e.g. "x.yaml: space.lr: ...");
        `label`, when given, replaces "SECTION.KEY" (e.g. "space.lr.grid").
        """
        known = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            at = where(source, label or (f"{section}.{key}" if section else str(key)))
            if key not in known:
                raise StudyError(f"{at}unknown config field; known: {', '.join(known)}")
            values[key] = check_value(hints[key], value, at)
            check = known[key].metadata.get("check")
            if check is not None and values[key] is not None:
                expected = check(values[key])
                if expected:
                    raise StudyError(f"{at}expected {expected}, got {value!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_kwargs(self) -> dict[str, Any]:
        """The options the chosen model's factory takes, read from this config."""
        return {name: getattr(self, name) for name in MODELS.options(self.model)}

    def replace(self, **changes: Any) -> "TrialConfig":
        return self.from_dict({**self.to_dict(), **changes})


def type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        return " or ".join(type_name(a) for a in args) + " or null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[hint]


def check_value(hint: Any, value: Any, prefix: str) -> Any:
    """Return `value` as type `hint` (int -> float is allowed), or raise a one-line error."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return check_value(inner, value, prefix)
    # numbers.* so that numpy scalars sampled by Tune's search algorithms pass too.
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, numbers.Integral) and not isinstance(value, bool),
        float: isinstance(value, numbers.Real) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise StudyError(f"{prefix}expected {type_name(hint)}, got {value!r}")
    return hint(value) if hint in (int, float) else value
