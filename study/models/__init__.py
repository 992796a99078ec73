"""Model registry. Every model is a plain `nn.Module` taking 3x32x32 images and returning logits.

Each entry below is the model's factory: its keyword-only arguments are the config fields the
model reads (they have no defaults here: `TrialConfig` holds the one set of defaults, and
`TrialConfig(model="cnn", channels=64).model_kwargs()` gives every option). The entries import
their module, and so torch, when called: the driver checks model names and options without
importing torch (about a second, and 500 MB, it would spend before Ray starts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from study.registry import Registry

if TYPE_CHECKING:
    from torch import nn

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def model_fields() -> dict[str, list[str]]:
    """Each config field some model reads -> the models that read it (their factories' options)."""
    fields: dict[str, list[str]] = {}
    for name in MODELS.names():
        for option in MODELS.options(name):
            fields.setdefault(option, []).append(name)
    return fields


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model `name` for `num_classes` outputs."""
    return MODELS.get(name)(num_classes, **kwargs)


@MODELS.register("mlp")
def mlp(num_classes: int, *, hidden: int) -> nn.Module:
    """The report's old_nn: sigmoid MLP 3072->4096->4096->classes (`hidden` sets 4096)."""
    from study.models.mlp import OldMLP

    return OldMLP(num_classes, hidden=hidden)


@MODELS.register("cnn")
def cnn(num_classes: int, *, channels: int, batch_norm: bool, fc_width: int, dropout: float) -> nn.Module:
    """The report's CNN: 4 convs (C, C, C, 2C), maxpool, FC `fc_width`, optional BN and dropout."""
    from study.models.cnn import ReportCNN

    return ReportCNN(num_classes, channels, batch_norm, fc_width, dropout)


@MODELS.register("resnet18")
def resnet18(num_classes: int, *, pretrained: bool, input_size: int) -> nn.Module:
    """torchvision ResNet18 (11M params), ImageNet-pretrained or from scratch, new head."""
    from study.models.resnet import ResNet18

    return ResNet18(num_classes, pretrained=pretrained, input_size=input_size)


__all__ = ["MODELS", "create_model", "model_fields"]
