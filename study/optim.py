"""The optimiser step, fused into the backward pass for a model's large parameters.

PyTorch's recipe "How to save memory by fusing the optimizer step into the backward pass": a
parameter whose gradient is complete is updated by a hook right away, and its gradient freed,
while backward goes on through the layers before it. A step then never holds every gradient
at once. The report's CNN keeps most of its weights in the first FC layer (16.8M of 17.4M at
width 128, 134M of 172M at width 1024), so its peak falls by about that layer's gradient
(benchmarks/memory.py; the figures are in docs/benchmarks.md).

Only parameters of at least LARGE elements get their own optimiser and hook; the many small ones
(biases, batch norm, small convolutions) share one optimiser, stepped after backward, so a step
costs a few more optimiser calls, not one per tensor. The update of each parameter is the same
torch optimiser's, with the same hyperparameters: the per-parameter math does not depend on
how parameters are grouped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

LARGE = 1 << 20  # elements (4 MiB of fp32 gradient): a parameter at least this big steps in backward


class StepInBackward:
    """Optimisers over `params` made by `make` (a list of parameters -> a torch optimiser).

    Call `zero_grad()` before and `step()` after each `loss.backward()`, as with one optimiser.
    `state_dict()` is the state of one optimiser over all `params`, in their order: the format
    checkpoints have always had, so checkpoints written before this class load, and the reverse.
    """

    def __init__(self, make: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], params: Iterable) -> None:
        self.params = [p for p in params if p.requires_grad]
        large = [p for p in self.params if p.numel() >= LARGE]
        small = [p for p in self.params if p.numel() < LARGE]
        # (optimiser, the positions in self.params of the parameters it updates)
        position = {id(p): i for i, p in enumerate(self.params)}
        self.groups = [(make([p]), [position[id(p)]]) for p in large]
        if small or not large:
            self.groups.append((make(small), [position[id(p)] for p in small]))
        self.after_backward = self.groups[-1][0] if small else None
        hooked = self.groups[: len(large)]  # the large parameters' own optimisers
        self.hooks = [
            p.register_post_accumulate_grad_hook(self._stepper(opt)) for p, (opt, _) in zip(large, hooked, strict=True)
        ]

    @staticmethod
    def _stepper(optimizer: torch.optim.Optimizer) -> Callable[[torch.Tensor], None]:
        def step(param: torch.Tensor) -> None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # this gradient is done: free it now

        return step

    def zero_grad(self) -> None:
        for optimizer, _ in self.groups:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """The small parameters' step; the large ones stepped during backward."""
        if self.after_backward is not None:
            self.after_backward.step()

    def state_dict(self) -> dict[str, Any]:
        state: dict[int, Any] = {}
        saved_groups = [(optimizer.state_dict(), positions) for optimizer, positions in self.groups]
        for saved, positions in saved_groups:
            local_ids = saved["param_groups"][0]["params"]
            for local, pos in zip(local_ids, positions, strict=True):
                if local in saved["state"]:
                    state[pos] = saved["state"][local]
        hyper = {k: v for k, v in saved_groups[0][0]["param_groups"][0].items() if k != "params"}
        return {"state": state, "param_groups": [{**hyper, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(
                f"optimiser state for {sum(len(g['params']) for g in groups)} parameters in {len(groups)} "
                f"group(s); this model has {len(self.params)} parameters in one"
            )
        ids, hyper = groups[0]["params"], {k: v for k, v in groups[0].items() if k != "params"}
        for optimizer, positions in self.groups:
            own = [ids[pos] for pos in positions]
            optimizer.load_state_dict(
                {
                    "state": {local: saved["state"][i] for local, i in enumerate(own) if i in saved["state"]},
                    "param_groups": [{**hyper, "params": list(range(len(own)))}],
                }
            )

    def remove_hooks(self) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
