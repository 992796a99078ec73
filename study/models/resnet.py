"""torchvision's ResNet18, from scratch or from ImageNet weights, with a new classifier head."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from study.errors import StudyError, reason

# torchvision is imported where it is used: a trial of another model doesn't pay its memory.


def imagenet_weights():
    """torchvision's ImageNet weights entry for ResNet18 (URL, hash, transforms)."""
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1


def weights_path() -> str:
    """Where torchvision's weights API looks for (and caches) the ImageNet checkpoint."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(imagenet_weights().url))


def missing_folders(path: str) -> list[str]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def pretrained_state_dict() -> dict[str, torch.Tensor]:
    """Load the ImageNet weights through torchvision's API; offline and uncached is a StudyError.

    torch.hub prints "Downloading: URL to PATH" on stdout, progress bar or not, even when the
    download then fails; a download that worked gets our own line on stderr instead. A failed one
    leaves no empty cache folders behind.
    """
    import contextlib
    import sys

    weights = imagenet_weights()
    made = missing_folders(os.path.dirname(weights_path()))
    try:
        if os.path.isfile(weights_path()):  # cached (every trial's case): torch.hub prints nothing
            return weights.get_state_dict(progress=False, check_hash=True)
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            state = weights.get_state_dict(progress=False, check_hash=True)
        print(f"[study] downloaded resnet18's ImageNet weights to {weights_path()}", file=sys.stderr, flush=True)
        return state
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        for folder in made:  # deepest first; one not empty (another process's download) stays
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise StudyError(
            f"resnet18 pretrained=true: ImageNet weights are not cached and could not be "
            f"downloaded ({reason(exc)}); download {weights.url} and save it as {weights_path()} "
            f"(or set TORCH_HOME), or use pretrained: false"
        ) from None


class ResNet18(nn.Module):
    """ResNet18 whose input is upsampled to `input_size` (224 = the size ImageNet weights expect)."""

    def __init__(self, num_classes: int, pretrained: bool, input_size: int) -> None:
        import torchvision

        super().__init__()
        self.input_size = input_size
        self.net = torchvision.models.resnet18(weights=None)
        if pretrained:
            self.net.load_state_dict(pretrained_state_dict())
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)  # new head, random init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size:
            # (B, 3, 32, 32) -> (B, 3, S, S); bilinear, as torchvision's Resize does on tensors
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return self.net(x)
