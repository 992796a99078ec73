import os

import pytest
import torch

from study.config import TrialConfig
from study.errors import StudyError
from study.models import MODELS, create_model


def build(name: str, num_classes: int, **fields):
    """A model as a trial builds it: TrialConfig's defaults (the only ones) plus `fields`."""
    return create_model(name, num_classes, **TrialConfig(model=name, **fields).model_kwargs())


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_shape_finite_and_every_parameter_learns(name):
    torch.manual_seed(0)
    model = build(name, 7)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", MODELS.names())
def test_factories_take_every_option_from_the_config_and_hold_no_defaults(name):
    import inspect

    params = inspect.signature(MODELS.get(name)).parameters.values()
    options = [p for p in params if p.kind == p.KEYWORD_ONLY]
    assert options and all(p.default is inspect.Parameter.empty for p in options)
    assert set(MODELS.options(name)) <= set(TrialConfig.field_names())


def test_models_lists_the_defaults_a_run_uses(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0
    defaults = TrialConfig()
    for name in MODELS.names():
        line = out.split(name, 1)[1].split("\n", 2)[1]
        for option in MODELS.options(name):
            assert f"{option}={getattr(defaults, option)!r}" in line, (name, option, line)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(StudyError, match="unknown model 'vgg'; known: cnn, mlp, resnet18"):
        create_model("vgg", num_classes=10)


def test_mlp_is_the_reports_old_nn():
    model = build("mlp", 100)
    shapes = [tuple(p.shape) for p in model.parameters() if p.dim() == 2]
    assert shapes == [(4096, 3072), (4096, 4096), (100, 4096)]


@pytest.mark.parametrize("channels,fc_width", [(32, 4096), (128, 4096), (64, 8192)])
def test_cnn_widths_follow_the_report(channels, fc_width):
    model = build("cnn", 100, channels=channels, fc_width=fc_width)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [channels, channels, channels, 2 * channels]
    fc = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert fc[0].in_features == 2 * channels * 4 * 4 and fc[0].out_features == fc_width


def test_cnn_batch_norm_and_dropout_switch_on():
    plain = build("cnn", 10, channels=8)
    bn = build("cnn", 10, channels=8, batch_norm=True, dropout=0.5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules()) == 4
    drop = [m for m in bn.modules() if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in drop] == [0.5]


def test_resnet18_upsamples_to_input_size():
    model = build("resnet18", 5, input_size=64)
    seen = []
    model.net.conv1.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert seen[0][-1] == 64


def test_pretrained_weights_offline_is_one_clear_line(monkeypatch, tmp_path, capsys):
    import torchvision.models._api as api

    from tests.conftest import UNREACHABLE

    real = api.load_state_dict_from_url
    monkeypatch.setattr(
        api, "load_state_dict_from_url", lambda url, *a, **k: real(f"{UNREACHABLE}/{url.rsplit('/', 1)[-1]}", *a, **k)
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached, not even its folders
    with pytest.raises(StudyError) as err:
        build("resnet18", 10, pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "resnet18-f37072fd.pth" in message and "pretrained: false" in message
    assert "Downloading" not in capsys.readouterr().out  # torch.hub's line, though nothing came
    assert os.listdir(tmp_path) == []  # torch.hub made TORCH_HOME/hub/checkpoints; all gone again
