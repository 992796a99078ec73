"""Selection never reads the test set: shuffle the test labels, and no choice moves.

Two image folders hold the same train images; their test images are the same too, but one
folder's test labels are shuffled. The same Optuna (TPE) search with ASHA runs on each. Every
selection (TPE's suggestions, ASHA's stops, the best trial, the trial `study export` takes)
must come out the same, while the test accuracies themselves differ.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow

SEARCH = """
name: blind
dataset: imagefolder
num_samples: 5
search: {type: optuna, seed: 0, max_concurrent: 1, n_startup_trials: 2}  # one at a time: a fixed order
scheduler: {type: asha, max_t: 3, grace_period: 1, reduction_factor: 2}
space:
  model: cnn
  channels: 8
  fc_width: 32
  epochs: 3
  batch_size: 64
  val_size: 0.2
  lr: {loguniform: [0.0003, 0.03]}
  augment: {choice: [none, flip]}
"""


def image_folder(root: str, images: torch.Tensor, labels: torch.Tensor, split: str) -> None:
    """Write `images` (N, 3, 32, 32) uint8 as lossless PNGs under ROOT/SPLIT/<label>/."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = os.path.join(root, split, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(os.path.join(folder, f"{i:04d}.png"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(honest, shuffled): the same digits images; the second's test labels are permuted."""
    from study.data.datasets import load_dataset

    digits = load_dataset("digits")
    train_x, train_y = digits.train_x[:400], digits.train_y[:400]
    test_x, test_y = digits.test_x[:150], digits.test_y[:150]
    shuffled_y = test_y[torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0))]
    assert (shuffled_y != test_y).float().mean() > 0.5
    roots = []
    for name, labels in (("honest", test_y), ("shuffled", shuffled_y)):
        root = str(tmp_path_factory.mktemp(name))
        image_folder(root, train_x, train_y, "train")
        image_folder(root, test_x, labels, "test")
        roots.append(root)
    return roots


def run_study(run_cli, space: str, data_dir: str, out: str, name: str) -> pd.DataFrame:
    code, printed, err = run_cli("run", space, "--storage-path", out, "--name", name, "--data-dir", data_dir)
    assert code == 0, err
    return pd.read_csv(os.path.join(out, name, "analysis", "results.csv"))


def test_shuffled_test_labels_change_no_selection(ray_session, run_cli, write_yaml, folders, tmp_path):
    space = write_yaml(SEARCH)
    honest, shuffled = (
        run_study(run_cli, space, root, str(tmp_path), name) for root, name in zip(folders, "ab", strict=True)
    )

    def identity(frame: pd.DataFrame) -> dict[str, tuple]:
        """Trial folder -> what TPE suggested for it (folder names hold random trial ids)."""
        first = frame.sort_values("epoch").groupby("trial_dir").head(1)
        return {row.trial_dir: (row.config_lr, row.config_augment) for row in first.itertuples()}

    def choices(frame: pd.DataFrame) -> set[tuple]:
        """Each trial's suggestion, and how far ASHA let it run."""
        last = frame.sort_values("epoch").groupby("trial_dir").tail(1)
        return {(*identity(frame)[row.trial_dir], row.epoch) for row in last.itertuples()}

    assert choices(honest) == choices(shuffled) and len(choices(honest)) == 5  # TPE and ASHA
    assert len({epochs for *_, epochs in choices(honest)}) > 1  # ASHA stopped some: a choice that could move
    names = [identity(honest), identity(shuffled)]
    for name in ("best_trials", "per_variant"):
        tables = [pd.read_csv(tmp_path / run / "analysis" / f"{name}.csv") for run in "ab"]
        if name == "best_trials":
            for table, named in zip(tables, names, strict=True):
                table["trial_dir"] = table["trial_dir"].map(named)
        chosen = ["trial_dir", "selected_epoch"] if name == "best_trials" else ["at_epoch", "n", "selected_epoch"]
        pd.testing.assert_frame_equal(tables[0][chosen], tables[1][chosen])
    exported = []
    for run, named in zip("ab", names, strict=True):
        code, printed, err = run_cli("export", str(tmp_path / run), "--out", str(tmp_path / f"{run}.pt"))
        assert code == 0, err
        exported.append(named[printed.split()[1]])
    assert exported[0] == exported[1]
    # The test numbers did change: the labels matter to them, and to nothing that was chosen.
    honest, shuffled = (f.assign(lr=f["config_lr"]) for f in (honest, shuffled))
    merged = honest.merge(shuffled, on=["lr", "epoch"], suffixes=("_honest", "_shuffled"))
    assert len(merged) == len(honest)
    assert (merged["val_acc_honest"] == merged["val_acc_shuffled"]).all()
    assert (merged["test_acc_honest"] != merged["test_acc_shuffled"]).any()
