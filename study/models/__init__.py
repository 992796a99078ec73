"""Model registry. Every model is a plain `nn.Module` taking 3x32x32 images and returning logits.

Register a factory with `@MODELS.register("name")`; its keyword-only arguments (with defaults)
are the config fields the model reads. They have no defaults here: `TrialConfig` holds the one
set of defaults, and `TrialConfig(model="cnn", channels=64).model_kwargs()` gives every option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from study.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the registered model `name` for `num_classes` outputs."""
    return MODELS.get(name)(num_classes, **kwargs)


def is_conv_net(model: nn.Module) -> bool:
    """True when channels_last memory layout can help (the model has 2-D convolutions)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


# Importing the modules registers their models.
from study.models import cnn, mlp, resnet  # noqa: E402,F401

__all__ = ["MODELS", "create_model", "is_conv_net"]
