"""Trained models out of an experiment: export one trial's weights, load them, classify images.

An exported file is a plain dict saved with `torch.save`: the model's state dict plus what
inference needs (model name and options, class names, normalisation mean/std, the trial's
config and metrics). It loads with `torch.load(path, weights_only=True)`: no pickle runs.

    from study.export import load_model, classify, read_images
    model, info = load_model("model.pt")
    probs = classify(model, info, read_images(["cat.png"]))  # (N, classes)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from study import storage
from study.checkpoints import newest_by_meta, read_checkpoint
from study.errors import StudyError, reason
from study.schema import CHECKPOINT_FILE

FORMAT = "cifar-study-model/1"
IMAGE_SIDE = 32  # every model here reads 32x32 RGB, as the datasets are stored


def newest_checkpoint(trial_dir: str) -> str:
    """The trial's checkpoint of its latest epoch (by meta.json; by folder name for older ones)."""
    if not storage.is_uri(trial_dir) and (by_epoch := newest_by_meta(trial_dir)):
        return os.path.join(by_epoch[0][0], CHECKPOINT_FILE)
    names = sorted(n for n, is_dir in storage.list_dir(trial_dir) if is_dir and n.startswith("checkpoint_"))
    if not names:
        raise StudyError(f"{trial_dir}: the trial has no checkpoint to export")
    return storage.join(trial_dir, names[-1], CHECKPOINT_FILE)


def export_checkpoint(
    checkpoint_file: str, out: str, per_epoch: dict[int, dict[str, float]], source: str
) -> dict[str, Any]:
    """Write `out` from a trial checkpoint, with the metrics the trial reported for the epoch the
    checkpoint holds (`per_epoch`: epoch -> metrics); the file appears whole or not at all."""
    state = read_checkpoint(checkpoint_file)
    epoch = int(state.get("epoch", 0))
    metrics = {**per_epoch.get(epoch, {}), "epoch": float(epoch)}
    info = state.get("inference")
    if not isinstance(info, dict):
        raise StudyError(
            f"{checkpoint_file}: no inference metadata in it (written by an older version of study); rerun the trial to export it"
        )
    exported = {"format": FORMAT, **info, "state_dict": state["model"], "metrics": metrics, "source": source}
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        torch.save(exported, tmp)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as exc:  # torch.save reports a bad path as a RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        raise StudyError(f"--out {out}: cannot write ({getattr(exc, 'strerror', None) or reason(exc)})") from None
    return exported


def load_model(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """An exported model in eval mode, and its info (classes, mean, std, config, metrics)."""
    from study.models import create_model

    try:
        info = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file") from None
    except Exception as exc:  # truncated, not a torch file, or a pickle weights_only refuses
        raise StudyError(f"{path}: not an exported model ({reason(exc, 100)})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise StudyError(f"{path}: not an exported model (expected format {FORMAT}); make one with `study export`")
    model = create_model(info["model"], info["num_classes"], **info["model_kwargs"])
    model.load_state_dict(info.pop("state_dict"))
    return model.to(device).eval(), info


def read_images(paths: Sequence[str]) -> torch.Tensor:
    """Image files -> uint8 (N, 3, 32, 32), resized as the imagefolder dataset resizes them."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image = image.convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE), Image.BILINEAR)
        except (OSError, ValueError, SyntaxError) as exc:
            raise StudyError(f"{path}: unreadable image ({reason(exc)})") from None
        images.append(pil_to_tensor(image))
    return torch.stack(images)


@torch.no_grad()
def classify(model: nn.Module, info: dict[str, Any], images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class probabilities (N, classes) for uint8 images (N, 3, 32, 32), normalised as in training."""
    from study.data.loader import BatchLoader

    device = next(model.parameters()).device
    labels = torch.zeros(len(images), dtype=torch.long, device=device)  # unused: the loader wants some
    loader = BatchLoader(images.to(device), labels, batch_size, tuple(info["mean"]), tuple(info["std"]))
    return torch.cat([F.softmax(model(x).float(), dim=1) for x, _ in loader])
