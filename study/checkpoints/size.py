"""A study's checkpoint sizes and disk use, estimated without allocating a model."""

from __future__ import annotations

from typing import Any

from study.space import StudySpec


def checkpoint_size_mb(cfg: Any, num_classes: int = 100) -> float:
    """A trial's checkpoint size, estimated without allocating: parameters on the meta device,
    4 bytes each, times 3 with Adam (weights and two moments) or 2 with SGD momentum."""
    import torch

    from study.models import create_model

    with torch.device("meta"):
        model = create_model(cfg.model, num_classes, **cfg.model_kwargs(weights_from_checkpoint=True))
        params = sum(p.numel() for p in model.parameters())
    copies = 3 if cfg.optimizer == "adam" else (2 if cfg.momentum > 0 else 1)
    return params * 4 * copies / 2**20


def checkpoint_disk(spec: StudySpec) -> tuple[float, float]:
    """(largest checkpoint in MB, most disk the study's checkpoints hold at once in GB): every
    trial keeping `keep_checkpoints` of its own size (sampled fields at their largest bound)."""
    known: dict[tuple, float] = {}  # one model per architecture and optimizer, not per grid point
    sizes = []
    for cfg in spec.trial_configs(bound="high"):
        key = (
            cfg.model,
            tuple(cfg.model_kwargs(weights_from_checkpoint=True).items()),
            cfg.optimizer,
            cfg.momentum > 0,
        )
        if key not in known:
            known[key] = checkpoint_size_mb(cfg)
        sizes.append(known[key])
    samples = spec.num_trials() / max(1, len(sizes))  # num_samples repeats of the grid
    return max(sizes), samples * sum(sizes) * spec.keep_checkpoints / 1024
