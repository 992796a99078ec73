import math

import pytest
import torch

from study.config import TrialConfig
from study.data.datasets import load_dataset
from study.errors import StudyError
from study.models import MODELS
from study.train import Trainer

TINY = dict(
    dataset="synthetic", num_train=256, num_test=128, model="cnn", channels=8, fc_width=64, batch_size=32, lr=3e-3
)


def tiny(**changes) -> TrialConfig:
    return TrialConfig.from_dict({**TINY, **changes})


def data_for(cfg: TrialConfig):
    return load_dataset(**cfg.data_kwargs())


# Every model in the registry; ResNet18 (11M parameters) takes seconds on a CPU, so the slow tier.
EVERY_MODEL = [pytest.param(m, marks=pytest.mark.slow) if m == "resnet18" else m for m in MODELS.names()]


@pytest.mark.parametrize("model", EVERY_MODEL)
def test_overfits_256_images(model):
    cfg = tiny(model=model, hidden=256, epochs=12)
    trainer = Trainer(cfg, data_for(cfg))
    losses = [trainer.run_epoch()["train_loss"] for _ in range(cfg.epochs)]
    assert losses[-1] <= losses[0] / 2, losses


def test_epoch_metrics_are_complete_and_sane():
    cfg = tiny()
    metrics = Trainer(cfg, data_for(cfg)).run_epoch()
    assert set(metrics) == {
        "epoch",
        "train_loss",
        "train_acc",
        "train_eval_loss",
        "train_eval_acc",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
        "epoch_time_s",
        "images_per_s",
        "diverged",
    }
    assert metrics["epoch"] == 1 and 0 <= metrics["test_acc"] <= 1 and metrics["images_per_s"] > 0
    assert 0 <= metrics["val_acc"] <= 1 and metrics["diverged"] is False
    cfg = tiny(val_size=0)  # the report's protocol: every train image trains, nothing to validate on
    assert "val_acc" not in Trainer(cfg, data_for(cfg)).run_epoch()


def test_same_seed_same_run_other_seed_other_run():
    runs = [Trainer(tiny(seed=s, augment="flip+crop", dropout=0.5), data_for(tiny())).run_epoch() for s in (0, 0, 1)]
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    assert runs[0]["train_loss"] != runs[2]["train_loss"]


def test_checkpoint_resume_continues_exactly(tmp_path):
    """Stop after 2 epochs, load into a fresh Trainer, and epoch 3 matches an unbroken run."""
    cfg = tiny(augment="flip+crop", dropout=0.3, epochs=3)
    data = data_for(cfg)
    unbroken = Trainer(cfg, data)
    expected = [unbroken.run_epoch() for _ in range(3)][-1]

    first = Trainer(cfg, data)
    first.run_epoch(), first.run_epoch()
    first.save(str(tmp_path / "ckpt.pt"))
    resumed = Trainer(cfg, data)
    resumed.load(str(tmp_path / "ckpt.pt"))
    assert resumed.epoch == 2
    got = resumed.run_epoch()
    assert got["epoch"] == 3
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert got["test_acc"] == pytest.approx(expected["test_acc"])


def test_huge_lr_is_reported_as_diverged():
    cfg = tiny(lr=1e3, optimizer="sgd", momentum=0.9)
    trainer = Trainer(cfg, data_for(cfg))
    results = [trainer.run_epoch() for _ in range(2)]
    assert any(r["diverged"] for r in results)


def test_channels_last_is_honoured_on_cpu():
    cfg = tiny(channels_last=True)
    trainer = Trainer(cfg, data_for(cfg))
    conv = trainer.model.features[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # A memory layout must not change the arithmetic: the same epoch as the default layout.
    assert trainer.run_epoch()["train_loss"] == pytest.approx(
        Trainer(tiny(), data_for(cfg)).run_epoch()["train_loss"], rel=1e-4
    )
    default = Trainer(tiny(), data_for(cfg))  # auto: off on cpu
    assert not default.compute.channels_last


def test_precision_bf16_autocasts_and_auto_is_fp32_on_cpu():
    cfg = tiny(precision="bf16")
    trainer = Trainer(cfg, data_for(cfg))
    seen = []
    trainer.model.classifier[-1].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    trainer.run_epoch()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert Trainer(tiny(), data_for(cfg)).compute.dtype is None


def test_config_rejects_bad_values_with_the_key():
    with pytest.raises(StudyError, match="epochs: expected an integer >= 1 and <= 10000, got 0"):
        tiny(epochs=0)
    with pytest.raises(StudyError, match="lr: expected a number, got 'fast'"):
        tiny(lr="fast")
    with pytest.raises(StudyError, match="chanels: unknown key; expected one of: model"):
        TrialConfig.from_dict({"chanels": 3})


@pytest.mark.slow
def test_compile_trains_and_checkpoints_stay_plain(tmp_path):
    """torch.compile runs forward and backward, and its checkpoint loads into an uncompiled model."""
    cfg = tiny(compile=True, max_steps_per_epoch=2)
    trainer = Trainer(cfg, data_for(cfg))
    assert (
        type(trainer.forward_model).__name__ == "OptimizedModule" and trainer.forward_model._orig_mod is trainer.model
    )
    metrics = trainer.run_epoch()  # the compiled module, forward and backward
    assert math.isfinite(metrics["train_loss"]) and not metrics["diverged"]
    trainer.save(str(tmp_path / "compiled.pt"))
    plain = Trainer(tiny(max_steps_per_epoch=2), data_for(cfg))
    plain.load(str(tmp_path / "compiled.pt"))  # keys without _orig_mod: a plain model reads them
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(plain.model.state_dict()[name], tensor), name


def epochs_of(
    times: list[float], write_s: float, every: int = 0, epochs: int = 100, stop_epochs: tuple[int, ...] = ()
) -> list[int]:
    """The epochs `checkpoint_due` saves, for epochs of these durations and writes of `write_s`."""
    from study.checkpoints.policy import checkpoint_due

    history, saved = [], []
    for epoch, seconds in enumerate(times, start=1):
        history.append({"epoch": epoch, "epoch_time_s": seconds, "diverged": False})
        if checkpoint_due(every, epochs, history, write_s, stop_epochs):
            history[-1]["checkpoint_s"] = write_s
            saved.append(epoch)
    return saved


def test_auto_checkpoints_every_epoch_while_a_write_is_cheap():
    assert epochs_of([10.0] * 6, write_s=0.5) == [1, 2, 3, 4, 5, 6]  # 5% of an epoch


def test_auto_spaces_expensive_checkpoints_to_5_percent_of_training():
    # A write of 1 s against 4 s epochs: every 20 s of training, the first included.
    assert epochs_of([4.0] * 16, write_s=1.0) == [5, 10, 15]
    # Time trained counts, not epochs: 2 epochs of 4 s, then 6 of 2 s make the 20 s.
    assert epochs_of([4.0] * 3 + [2.0] * 12, write_s=1.0) == [7]


def test_auto_leaves_the_end_to_the_last_checkpoint():
    # Epoch 15 would have paid for a write, but the last (always written) comes 4 s later.
    assert epochs_of([4.0] * 16, write_s=1.0, epochs=16) == [5, 10, 16]
    # A run shorter than one write's worth of training writes its last epoch alone.
    assert epochs_of([4.0] * 5, write_s=1.0, epochs=5) == [5]


def test_epochs_where_asha_may_stop_a_trial_are_always_saved():
    # ASHA's rungs at epochs 1 and 4: each may be the trial's last, so each is written; then the
    # 20 s rule, which also leaves a write to a rung (or the last epoch) that is near.
    assert epochs_of([4.0] * 16, write_s=1.0, epochs=16, stop_epochs=(1, 4)) == [1, 4, 9, 16]
    assert epochs_of([4.0] * 16, write_s=1.0, epochs=16, stop_epochs=(6,)) == [6, 11, 16]
    assert epochs_of([1.0] * 7, write_s=0.0, every=3, epochs=7, stop_epochs=(2,)) == [2, 3, 6, 7]


@pytest.mark.parametrize(("max_t", "grace", "rf"), [(6, 2, 2), (8, 1, 4), (4, 1, 2), (27, 1, 3), (20, 5, 2), (3, 3, 2)])
def test_stop_epochs_are_the_rungs_of_rays_asha(write_yaml, max_t, grace, rf):
    from study.space import load_spec
    from study.tuning.search import make_scheduler

    scheduler = f"{{type: asha, max_t: {max_t}, grace_period: {grace}, reduction_factor: {rf}}}"
    spec = load_spec(write_yaml(f"dataset: digits\nscheduler: {scheduler}\nspace: {{epochs: {max_t}}}\n"))
    rungs = sorted(milestone for milestone, _ in make_scheduler(spec)._brackets[0]._rungs)  # Ray's own
    assert spec.stop_epochs() == tuple(rungs)
    fifo = load_spec(write_yaml("dataset: digits\nscheduler: {type: fifo}\nspace: {epochs: 5}\n"))
    assert fifo.stop_epochs() == ()


def test_last_and_diverged_epochs_are_always_saved_and_every_n_is_kept():
    from study.checkpoints.policy import checkpoint_due

    assert epochs_of([1.0] * 7, write_s=0.0, every=3, epochs=7) == [3, 6, 7]
    history = [{"epoch": 1, "epoch_time_s": 1, "checkpoint_s": 9}, {"epoch": 2, "epoch_time_s": 1, "diverged": True}]
    assert checkpoint_due(0, 9, history, 9.0)
    assert not checkpoint_due(0, 9, history[:1] + [{**history[1], "diverged": False}], 9.0)


def test_expected_write_time_probes_once_per_process_then_uses_measured_writes(tmp_path, monkeypatch):
    from study.checkpoints import policy as checkpoints

    speed = checkpoints.WriteSpeed()
    monkeypatch.setattr(checkpoints, "WRITE_SPEED", speed)
    # No write yet in this process: a probe (a torch.save of zeros) measures the disk, and leaves nothing.
    write_s, probe_s = checkpoints.expected_write_s([], 8 * 2**20, str(tmp_path))
    assert probe_s > 0 and write_s == pytest.approx(probe_s, rel=1e-6) and speed.bytes_per_s > 0
    assert list(tmp_path.iterdir()) == []
    # Later trials of the process scale the measured speed to their own state's size; no probe.
    assert checkpoints.expected_write_s([], 16 * 2**20, str(tmp_path)) == (pytest.approx(2 * write_s), 0.0)
    speed.note(100 * 2**20, 0.5)  # a real write: 200 MiB/s
    assert checkpoints.expected_write_s([], 2**30, None) == (pytest.approx(5.12), 0.0)
    # A trial that has written a checkpoint expects its own measured time again.
    history = [{"epoch": 1, "epoch_time_s": 3.0, "checkpoint_s": 0.7}, {"epoch": 2, "epoch_time_s": 3.0}]
    assert checkpoints.expected_write_s(history, 2**30, None) == (0.7, 0.0)


def test_state_bytes_counts_weights_and_optimiser_state():
    cfg = tiny(max_steps_per_epoch=1)
    trainer = Trainer(cfg, data_for(cfg))
    weights = sum(p.numel() * p.element_size() for p in trainer.model.state_dict().values())
    assert trainer.state_bytes() == weights  # before the first step Adam holds no state
    trainer.run_epoch()
    params = sum(p.numel() * p.element_size() for p in trainer.model.parameters())
    assert trainer.state_bytes() >= weights + 2 * params  # Adam's two moments per parameter


def test_checkpoint_every_defaults_to_auto_and_rejects_negatives():
    assert TrialConfig().checkpoint_every == 0
    with pytest.raises(StudyError, match="checkpoint_every"):
        TrialConfig.from_dict({"checkpoint_every": -1}, source="x.yaml", section="space")


def two_layer_net(seed: int) -> torch.nn.Module:
    """One parameter big enough to step in backward (1.1M elements), the rest small."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1100, 1000), torch.nn.ReLU(), torch.nn.Linear(1000, 10))


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-4, fused=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
    ],
    ids=["adam", "sgd"],
)
def test_stepping_large_parameters_in_backward_trains_as_one_optimiser_and_frees_their_gradients(make):
    from study.optim import StepInBackward

    plain_net, fused_net = two_layer_net(0), two_layer_net(0)
    plain, fused = make(list(plain_net.parameters())), StepInBackward(make, fused_net.parameters())
    big = fused_net[0].weight
    assert len(fused.hooks) == 1 and big.numel() >= 2**20
    x, y = torch.randn(64, 1100, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 10
    for _ in range(3):
        for net, opt in ((plain_net, plain), (fused_net, fused)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            if opt is fused:  # the big weight has stepped and dropped its gradient; the rest wait
                assert big.grad is None and fused_net[0].bias.grad is not None
            opt.step()
    for a, b in zip(plain_net.parameters(), fused_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    # Its state is one optimiser's: the same tensors under the same indices, and it loads back.
    saved, ours = plain.state_dict(), fused.state_dict()
    assert ours["param_groups"] == saved["param_groups"] and ours["state"].keys() == saved["state"].keys()
    for i, per_param in saved["state"].items():
        for key, value in per_param.items():
            torch.testing.assert_close(ours["state"][i][key], value, rtol=0, atol=1e-6)
    restored = StepInBackward(make, two_layer_net(0).parameters())
    restored.load_state_dict(saved)  # a checkpoint written by one optimiser (before this class)
    torch.testing.assert_close(restored.state_dict()["state"], ours["state"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="state for 4 parameters in 1 group.*this model has 2"):
        StepInBackward(make, torch.nn.Linear(3, 3).parameters()).load_state_dict(saved)


def test_the_cnns_first_fc_layer_steps_in_backward_and_keeps_no_gradient():
    trainer = Trainer(tiny(fc_width=4096, max_steps_per_epoch=2), data_for(tiny()))  # FC 256 x 4096: 1M weights
    fc = trainer.model.classifier[1].weight
    trainer.run_epoch()
    assert fc.grad is None  # freed as soon as it had been used, in every step
    assert all(p.grad is not None for p in trainer.model.parameters() if p.numel() < fc.numel())
    trainer.close()
    assert not fc._post_accumulate_grad_hooks  # closing unhooks it: no cycle keeps the model alive
