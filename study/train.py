"""The training core: model, optimiser and device-resident data for one trial. No Ray here.

`train_one_epoch` and `evaluate` are plain functions that return metric dicts; `Trainer` ties
them to one `TrialConfig`, times them, and saves/loads its whole state so a trial can stop and
continue bit-for-bit (model, optimiser, epoch, and every random generator).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from study.checkpoints.files import read_checkpoint
from study.config import TrialConfig
from study.data.image_data import ImageData
from study.data.loader import BatchLoader
from study.models import create_model
from study.optim import StepInBackward


def resolve_device(name: str) -> torch.device:
    """ "auto" is cuda when this process can see a GPU (Ray sets CUDA_VISIBLE_DEVICES per trial)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' but this process sees no GPU; ask for gpu > 0 per trial")
    return torch.device(name)


def autocast_dtype(cfg: TrialConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast: on by default on cuda; fp32 (None) by default on cpu."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def is_conv_net(model: nn.Module) -> bool:
    """True when channels_last memory layout can help (the model has 2-D convolutions)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def make_optimizer(cfg: TrialConfig, params) -> StepInBackward:
    """SGD or Adam with torch's fused kernel (cpu and cuda): one pass over each parameter, no
    parameter-sized temporaries, so faster and lighter than the per-tensor loop (benchmarks/memory.py).
    The large parameters step during backward (`study.optim`)."""

    def make(group: list[nn.Parameter]) -> torch.optim.Optimizer:
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(group, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
        return torch.optim.Adam(group, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    return StepInBackward(make, params)


class ComputeFormat:
    """Where and in what format a model computes: its device, autocast dtype and memory layout."""

    def __init__(self, device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> None:
        self.device, self.dtype, self.channels_last = device, dtype, channels_last

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class RunningTotals:
    """Loss and correct predictions summed on the device: one host sync per epoch, not per batch."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.seen = 0

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss_sum.detach()
        self.correct += (logits.argmax(1) == labels).sum()
        self.seen += len(labels)

    def means(self, split: str) -> dict[str, float]:
        return {f"{split}_loss": self.loss_sum.item() / self.seen, f"{split}_acc": self.correct.item() / self.seen}


def train_one_epoch(
    model: nn.Module, optimizer: StepInBackward, loader: BatchLoader, compute: ComputeFormat
) -> dict[str, float]:
    """One pass over `loader`. Returns mean train_loss and train_acc over the images seen."""
    model.train()
    totals = RunningTotals(compute.device)
    for x, y in loader:
        with compute.autocast():
            logits = model(compute.prepare(x))  # (B, classes)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad()
        loss.backward()  # the large parameters are updated in here, each as its gradient is done
        optimizer.step()
        totals.add(loss * len(y), logits, y)
    return {**totals.means("train"), "train_images": totals.seen}


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, compute: ComputeFormat, split: str = "test") -> dict[str, float]:
    """Mean SPLIT_loss and SPLIT_acc over every image in `loader` (eval mode, no augmentation)."""
    model.eval()
    totals = RunningTotals(compute.device)
    for x, y in loader:
        with compute.autocast():
            logits = model(compute.prepare(x))  # (B, classes)
        totals.add(F.cross_entropy(logits.float(), y, reduction="sum"), logits, y)
    return totals.means(split)


TRAIN_EVAL_IMAGES = 10_000  # train images measured in eval mode each epoch (all, if fewer)


def fixed_subset(n: int, size: int) -> torch.Tensor:
    """The first `size` of a fixed shuffle (seed 0) of range(n): the same images every epoch and trial."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size]


class Trainer:
    """One trial's training state, built from a `TrialConfig` and an `ImageData`."""

    def __init__(self, cfg: TrialConfig, data: ImageData, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)  # model init and dropout masks
        model = create_model(cfg.model, data.num_classes, **cfg.model_kwargs())
        channels_last = cfg.channels_last
        if channels_last is None:
            channels_last = self.device.type == "cuda" and is_conv_net(model)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.forward_model = torch.compile(self.model) if cfg.compile else self.model
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.compute = ComputeFormat(self.device, autocast_dtype(cfg, self.device), channels_last)
        # The dataset moves to the device once; batches are index slices of it from here on.
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.train_loader = BatchLoader(
            data.train_x.to(self.device),
            data.train_y.to(self.device),
            cfg.batch_size,
            data.mean,
            data.std,
            cfg.augment,
            self.generator,
            drop_last_single=True,
            max_batches=cfg.max_steps_per_epoch,
        )
        self.test_loader = BatchLoader(
            data.test_x.to(self.device), data.test_y.to(self.device), cfg.eval_batch_size, data.mean, data.std
        )
        # The held-out validation images: what every selection reads (see study.data.split).
        self.val_loader = None
        if data.val_x is not None and len(data.val_y):
            self.val_loader = BatchLoader(
                data.val_x.to(self.device), data.val_y.to(self.device), cfg.eval_batch_size, data.mean, data.std
            )
        # Train accuracy as the test split is measured (eval mode, no augmentation) on a fixed
        # subset of the train split: the honest side of a train-test gap. The running train_acc
        # is taken in train mode on augmented images, while the weights still change.
        # Batches of the subset are gathered from the train split as they are needed: no copy.
        self.train_eval_loader = BatchLoader(
            self.train_loader.images,
            self.train_loader.labels,
            cfg.eval_batch_size,
            data.mean,
            data.std,
            indices=fixed_subset(len(data.train_y), TRAIN_EVAL_IMAGES).to(self.device),
        )
        self.epoch = 0  # epochs completed
        # Plain types only, so the checkpoint stays loadable with weights_only=True.
        self.inference = {
            "model": cfg.model,
            "model_kwargs": cfg.model_kwargs(weights_from_checkpoint=True),
            "num_classes": data.num_classes,
            "classes": list(data.classes),
            "mean": list(data.mean),  # per channel, pixels in [0, 1]
            "std": list(data.std),
            "config": cfg.to_dict(),
        }

    def run_epoch(self) -> dict[str, Any]:
        """Train one epoch, then evaluate. Returns the metrics a trial reports for this epoch."""
        start = time.perf_counter()
        train = train_one_epoch(self.forward_model, self.optimizer, self.train_loader, self.compute)
        train_time = time.perf_counter() - start
        test = evaluate(self.forward_model, self.test_loader, self.compute)
        val = evaluate(self.forward_model, self.val_loader, self.compute, split="val") if self.val_loader else {}
        train_eval = evaluate(self.forward_model, self.train_eval_loader, self.compute, split="train_eval")
        self.epoch += 1
        diverged = not all(math.isfinite(loss) for loss in (train["train_loss"], test["test_loss"], *val.values()))
        return {
            "epoch": self.epoch,
            **{k: v for k, v in train.items() if k != "train_images"},
            **val,
            **test,
            **train_eval,
            "epoch_time_s": time.perf_counter() - start,  # train + evaluation
            "images_per_s": train["train_images"] / train_time,  # training throughput only
            "diverged": diverged,
        }

    def state_dict(self) -> dict[str, Any]:
        state = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "inference": self.inference,  # what `study export` / `study predict` need, no dataset
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def state_bytes(self) -> int:
        """Bytes of the tensors a checkpoint holds: the weights and the optimiser's state (Adam: 2x)."""
        tensors = list(self.model.state_dict().values())
        for per_param in self.optimizer.state_dict()["state"].values():
            tensors += [v for v in per_param.values() if isinstance(v, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch = int(state["epoch"])

    def close(self) -> None:
        """Free the model, optimiser and device-resident batches now; the trainer is unusable after."""
        if "optimizer" in self.__dict__:
            self.optimizer.remove_hooks()  # the hooks tie parameters and optimisers in a cycle
        self.__dict__.clear()

    def save(self, path: str) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path: str) -> None:
        """Load a checkpoint file: tensors and plain containers only (see `read_checkpoint`)."""
        self.load_state_dict(read_checkpoint(path, self.device))
