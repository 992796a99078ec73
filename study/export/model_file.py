"""The exported model file: written from a trial's checkpoint, loaded back with every field checked."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from study import storage
from study.checkpoints.files import newest_by_meta, read_checkpoint
from study.errors import StudyError, reason
from study.names import CHECKPOINT_FILE
from study.trust.recovery import unsigned_checkpoints

FORMAT = "cifar-study-model/1"
MAX_MODEL_MB = 4096  # parameters and buffers at 4 bytes each; the report's largest CNN is ~700 MB
MAX_CLASSES = 100_000


def newest_checkpoint(trial_dir: str, trust: bool = False) -> str:
    """The trial's checkpoint of its latest epoch (by meta.json; by folder name for older ones).

    Unless `trust`, every checkpoint of the trial must be one its own trial signed with this
    user's key (see `study.trust.signing`): a planted or forged one is refused, never exported.
    """
    if not trust and (found := unsigned_checkpoints(trial_dir)):
        folder, why = found[0]
        raise StudyError(
            f"{folder}: {why}; refusing to export from this trial: delete that checkpoint folder, or if you "
            "have read it and trust it, pass --trust"
        )
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
    """An exported model in eval mode, and its info (classes, mean, std, config, metrics).

    The file is checked before a model is built (see `check_model_file`): a wrong or hostile
    file is a StudyError, never a traceback or a huge allocation.
    """
    from study.models import create_model

    try:
        info = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file") from None
    except Exception as exc:  # truncated, not a torch file, or a pickle weights_only refuses
        raise StudyError(
            f"{path}: not an exported model (torch.load cannot read it: {type(exc).__name__} {reason(exc, 100)}); "
            "make one with `study export`"
        ) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise StudyError(f"{path}: not an exported model (expected format {FORMAT}); make one with `study export`")
    kwargs = check_model_file(path, info)
    model = create_model(info["model"], info["num_classes"], **kwargs)
    model.load_state_dict(info.pop("state_dict"))  # keys and shapes checked: it fits
    return model.to(device).eval(), info


def check_model_file(path: str, info: dict[str, Any]) -> dict[str, Any]:
    """Check an exported model's fields, options, size and weights; return the model's options.

    The model is first built on the meta device (no memory), so options that would allocate
    more than MAX_MODEL_MB are refused before anything is allocated.
    """
    from study.config import TrialConfig
    from study.models import MODELS, create_model

    def bad(what: str) -> StudyError:
        return StudyError(f"{path}: not a usable exported model: {what}")

    name, num_classes, classes = info.get("model"), info.get("num_classes"), info.get("classes")
    if not isinstance(name, str) or name not in MODELS.names():
        raise bad(f"model: expected one of {', '.join(MODELS.names())}, got {name!r:.80}")
    if type(num_classes) is not int or not 1 <= num_classes <= MAX_CLASSES:
        raise bad(f"num_classes: expected an integer from 1 to {MAX_CLASSES}, got {num_classes!r:.80}")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("classes: expected a list of class names")
    if len(classes) != num_classes:
        raise bad(f"classes: {len(classes)} names for num_classes {num_classes}")
    for field in ("mean", "std"):
        values = info.get(field)
        numbers = isinstance(values, list) and len(values) == 3
        if not numbers or not all(type(v) in (int, float) and math.isfinite(v) for v in values):
            raise bad(f"{field}: expected 3 finite numbers (one per RGB channel), got {values!r:.80}")
    if not all(v > 0 for v in info["std"]):
        raise bad(f"std: expected numbers > 0, got {info['std']}")
    raw = info.get("model_kwargs")
    if not isinstance(raw, dict):
        raise bad(f"model_kwargs: expected a mapping of {name}'s options, got {raw!r:.80}")
    options = MODELS.options(name)
    extra, missing = sorted(set(map(str, raw)) - set(options)), [o for o in options if o not in raw]
    if extra or missing:
        raise bad(f"model_kwargs: {name} takes {', '.join(options)}; got {', '.join(map(str, raw)) or 'none'}")
    try:  # types and ranges, as a YAML file's are checked
        kwargs = TrialConfig.from_dict({"model": name, **raw}, path, "model_kwargs").model_kwargs(True)
    except StudyError as exc:
        raise bad(str(exc).removeprefix(f"{path}: ")) from None
    with torch.device("meta"):
        shapes = {k: tuple(t.shape) for k, t in create_model(name, num_classes, **kwargs).state_dict().items()}
    size_mb = sum(math.prod(shape) for shape in shapes.values()) * 4 / 2**20
    if size_mb > MAX_MODEL_MB:
        raise bad(f"its options make a {size_mb:,.0f} MB model, more than the {MAX_MODEL_MB} MB a model may take")
    weights = info.get("state_dict")
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise bad("state_dict: expected a mapping of parameter names to tensors")
    if missing := [k for k in shapes if k not in weights]:
        raise bad(
            f"state_dict: no weights for {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:] else "")
        )
    if extra := [str(k) for k in weights if k not in shapes]:
        raise bad(f"state_dict: {extra[0]:.80} is not a weight of {name}")
    for key, shape in shapes.items():
        if tuple(weights[key].shape) != shape:
            raise bad(f"state_dict: {key} has shape {tuple(weights[key].shape)}, the model's is {shape}")
    return kwargs
