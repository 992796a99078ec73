"""The bad-input catalogue: each case is a real `study` command line that must fail with exit 2.

`tests/test_errors.py` runs every case through the CLI (exit code, one line, no folder left).
`python -m tests.error_catalogue` runs them all and prints the Markdown table of docs/errors.md,
so the messages in the docs are the real ones.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

TINY = """name: tiny
dataset: synthetic
space:
  epochs: 1
  model: cnn
  channels: 8
  fc_width: 32
  num_train: 128
  num_test: 64
"""


@dataclass(frozen=True)
class Case:
    what: str  # the bad input, as the docs name it
    fragment: str  # a part of the one line the CLI must print
    make: Callable[[str], list[str]]  # folder -> argv (after `study`); writes what it needs there
    starts_ray: bool = False  # refused only once Ray knows the nodes: a slow test


def write(folder: str, name: str, data: str | bytes) -> str:
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def run_file(text: str | bytes, *flags: str) -> Callable[[str], list[str]]:
    """`study run FILE --storage-path FOLDER/results FLAGS...` for a file with this text."""

    def make(folder: str) -> list[str]:
        return ["run", write(folder, "space.yaml", text), "--storage-path", os.path.join(folder, "results"), *flags]

    return make


def data_dir_is_a_file(folder: str) -> list[str]:
    return run_file(TINY, "--data-dir", write(folder, "afile", "not a folder"))(folder)


def tiny_with(line: str) -> str:
    return TINY + f"  {line}\n"


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


def values(n: int, first: int = 1) -> str:
    return "[" + ", ".join(str(first + i) for i in range(n)) + "]"


# Inputs that once took minutes to check (quadratic duplicate checks, every grid point built).
COSTLY = {
    "a 100,000-option choice": tiny_with("lr: {choice: [" + ", ".join(f"{i}e-7" for i in range(1, 100_001)) + "]}"),
    "a 100,000-value grid": tiny_with(f"seed: {{grid: {values(100_000, 0)}}}"),
    "a 15,000-option choice": tiny_with("lr: {choice: [" + ", ".join(f"{i}e-7" for i in range(1, 15_001)) + "]}"),
    "a grid of 8,000,000 points": TINY.replace("channels: 8", f"channels: {{grid: {values(200)}}}")
    .replace("fc_width: 32", f"fc_width: {{grid: {values(200)}}}")
    .replace("space:", "resources: {gpu: 0}\nspace:")
    + f"  seed: {{grid: {values(200, 0)}}}\n",
    "a grid of 15,000 points": TINY.replace("channels: 8", f"channels: {{grid: {values(3)}}}")
    + f"  seed: {{grid: {values(5000, 0)}}}\n",
}


def imagefolder(kind: str) -> Callable[[str], list[str]]:
    """An imagefolder with one broken image (or a single class), run through `--set data_dir`."""

    def make(folder: str) -> list[str]:
        from PIL import Image

        root = os.path.join(folder, "images")
        classes = ("cat",) if kind == "one class" else ("cat", "dog")
        for split in ("train", "test"):
            for cls in classes:
                os.makedirs(os.path.join(root, split, cls), exist_ok=True)
                Image.new("RGB", (8, 8), (255, 0, 0)).save(os.path.join(root, split, cls, "ok.png"))
        if kind == "truncated":
            jpeg = os.path.join(root, "train", "cat", "x.jpg")
            Image.new("RGB", (64, 64)).save(jpeg)
            with open(jpeg, "r+b") as f:
                f.truncate(100)
        if kind == "empty":
            write(root, "train/dog/empty.png", b"")
        return run_file(TINY.replace("synthetic", "imagefolder"), "--data-dir", root)(folder)

    return make


def resume_of(setup: str) -> Callable[[str], list[str]]:
    def make(folder: str) -> list[str]:
        exp = os.path.join(folder, "results", "exp")
        if setup == "missing":
            return ["resume", exp]
        os.makedirs(exp)
        if setup in ("spec only", "half"):
            write(exp, "study.yaml", TINY)
        if setup == "half":
            os.makedirs(os.path.join(exp, "trial-s0-00000"))
        if setup == "trial link":  # a trial folder that is a link to a folder outside
            write(exp, "study.yaml", TINY)
            os.makedirs(os.path.join(folder, "elsewhere"))
            os.symlink(os.path.join(folder, "elsewhere"), os.path.join(exp, "trial-s0-00000"))
        return ["resume", exp]

    return make


def grow(text: str, num_samples: int) -> Callable[[str], list[str]]:
    """`study resume EXP --num-samples N` of a study saved with this text (study.yaml alone: the
    growth is checked before the folder's state)."""

    def make(folder: str) -> list[str]:
        exp = os.path.join(folder, "results", "exp")
        write(exp, "study.yaml", text)
        return ["resume", exp, "--num-samples", str(num_samples)]

    return make


OPTUNA_TINY = TINY + "  lr: {loguniform: [0.001, 0.1]}\nnum_samples: 4\nsearch: {type: optuna}\n"


def storage_is_a_file(folder: str) -> list[str]:
    path = write(folder, "a-file", "not a folder")
    return ["run", write(folder, "space.yaml", TINY), "--storage-path", os.path.join(path, "results")]


def two_files_one_name(folder: str) -> list[str]:
    a, b = write(folder, "a.yaml", TINY), write(folder, "b.yaml", TINY)
    return ["run", a, b, "--storage-path", os.path.join(folder, "results")]


def one_file_twice(folder: str) -> list[str]:
    path = write(folder, "a.yaml", TINY)
    return ["run", path, path, "--storage-path", os.path.join(folder, "results")]


def validate_two_files_one_name(folder: str) -> list[str]:
    return ["validate", write(folder, "a.yaml", TINY), write(folder, "b.yaml", TINY)]


def exported_model(**changes: object) -> dict:
    """A valid exported model (a 3-class CNN of width 4), with `changes` over its fields."""
    from study.export.model_file import FORMAT
    from study.models import create_model

    kwargs = {"channels": 4, "batch_norm": False, "fc_width": 8, "dropout": 0.0}
    info = {
        "format": FORMAT,
        "model": "cnn",
        "model_kwargs": kwargs,
        "num_classes": 3,
        "classes": ["cat", "dog", "eel"],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "config": {},
        "state_dict": create_model("cnn", 3, **kwargs).state_dict(),
        "metrics": {},
        "source": "test",
    }
    info.update(changes)
    return info


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header claims width x height (1-bit grey): cheap to write, costly to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def predict_with(image: bytes | None = None, image_name: str = "x.png", drop: str = "", **changes: object):
    """`study predict MODEL IMAGE` for an exported model with `changes` (or `drop`, a field
    removed), and an image: a valid 8x8 PNG unless `image` gives the file's bytes."""

    def make(folder: str) -> list[str]:
        import torch
        from PIL import Image

        model = exported_model(**changes)
        model.pop(drop, None)
        torch.save(model, os.path.join(folder, "model.pt"))
        path = os.path.join(folder, image_name)
        if image is None:
            Image.new("RGB", (8, 8), (255, 0, 0)).save(path, format="PNG")
        else:
            write(folder, image_name, image)
        return ["predict", os.path.join(folder, "model.pt"), path]

    return make


def wrong_tensor(key: str, shape: tuple[int, ...]) -> dict:
    weights = dict(exported_model()["state_dict"])
    import torch

    weights[key] = torch.zeros(shape)
    return weights


CASES = [
    Case("YAML syntax error", "line 2: YAML syntax error", run_file("name: x\nspace: {lr: 0.1]\n")),
    Case("unknown top-level key", "nmae: unknown key; expected one of: name,", run_file("nmae: x\n")),
    Case(
        "unknown config field",
        "space.chanels: unknown key; expected one of: model,",
        run_file("space: {chanels: 64}\n"),
    ),
    Case("wrong type", "space.epochs: expected an integer, got 'three'", run_file("space: {epochs: three}\n")),
    Case(
        "unknown model", "space.model: expected one of cnn, mlp, resnet18, got 'vgg'", run_file("space: {model: vgg}\n")
    ),
    Case("unknown dataset", "dataset: expected one of cifar10, cifar100, digits", run_file("dataset: imagenet\n")),
    Case(
        "unknown augmentation",
        "space.augment: expected one of none, flip, crop, flip+crop",
        run_file("space: {augment: rotate}\n"),
    ),
    Case("epochs 0", "space.epochs: expected an integer >= 1 and <= 10000, got 0", run_file("space: {epochs: 0}\n")),
    Case(
        "log scale from 0",
        "space.lr.loguniform: expected low > 0 for a log scale",
        run_file("space: {lr: {loguniform: [0, 0.1]}}\n"),
    ),
    Case(
        "an empty grid", "space.seed.grid: expected a non-empty list, got []", run_file("space: {seed: {grid: []}}\n")
    ),
    Case("YAML aliases (a 'billion laughs' bomb)", "aliases (*a) are not allowed", run_file(ALIAS_BOMB)),
    Case("a duplicate key", "line 10: duplicate key 'channels'", run_file(tiny_with("channels: 4096"))),
    Case("a file that is not UTF-8", "not UTF-8 text (byte 0xff at offset 6)", run_file(b"name: \xff\xfe\n")),
    Case("a complex key", "line 2: a key must be a plain value, not a sequence", run_file("name: x\n? [a, b]\n: 1\n")),
    Case("lists nested 1000 deep", "line 1: lists and mappings nested more than 32 deep", run_file("[" * 1000)),
    Case(
        "a 100,000-value grid",
        "line 10: more than 20000 values; a search space needs far fewer",
        run_file(COSTLY["a 100,000-value grid"]),
    ),
    Case(
        "a 15,000-option choice",
        "space.lr.choice: 15000 values; at most 10000 in one list",
        run_file(COSTLY["a 15,000-option choice"]),
    ),
    Case(
        "a grid of 8,000,000 points",
        "space: 8000000 trials; at most 100000 in one study",
        run_file(COSTLY["a grid of 8,000,000 points"]),
    ),
    Case(
        "a grid of 15,000 points",
        "space: 15000 grid points x variants; at most 10000 in one study",
        run_file(COSTLY["a grid of 15,000 points"]),
    ),
    Case(
        "a huge width",
        "space.channels: expected an integer >= 1 and <= 2048, got 1000000000",
        run_file(TINY.replace("channels: 8", "channels: 1000000000")),
    ),
    Case(
        "a seed out of range",
        "space.seed: expected an integer >= 0 and <= 4294967295",
        run_file(tiny_with("seed: 100000000000000000000")),
    ),
    Case(
        "uniform on an integer field",
        "space.channels.uniform: channels cannot be sampled with uniform; use randint",
        run_file(TINY.replace("channels: 8", "channels: {uniform: [8, 16]}")),
    ),
    Case(
        "randint that reaches absurd values",
        "space.batch_size.randint: expected an integer >= 1 and <= 65536",
        run_file(tiny_with("batch_size: {randint: [1, 100000000000000000000000]}")),
    ),
    Case("a bad --set value", "--set lr=fast: lr: expected a number, got 'fast'", run_file(TINY, "--set", "lr=fast")),
    Case(
        "an unknown logger",
        "loggers: expected a list of mlflow, wandb, tensorboard (each at most once), got ['comet']",
        run_file(TINY + "loggers: [comet]\n"),
    ),
    Case(
        "a `--logger` given twice",
        "--logger: expected a list of mlflow, wandb, tensorboard (each at most once), got ['mlflow', 'mlflow']",
        run_file(TINY, "--logger", "mlflow", "--logger", "mlflow"),
    ),
    Case("--set without =", "--set: expected FIELD=VALUE", run_file(TINY, "--set", "lr")),
    Case(
        "--max-epochs 0",
        "--max-epochs: expected an integer >= 1 and <= 10000, got 0",
        run_file(TINY, "--max-epochs", "0"),
    ),
    Case(
        "--max-epochs and --set epochs",
        "--set epochs=3: conflicts with --max-epochs 1",
        run_file(TINY, "--max-epochs", "1", "--set", "epochs=3"),
    ),
    Case(
        "a flag over a section that is not a mapping",
        "scheduler: expected a mapping of keys, got 'asha'",
        run_file(TINY + "scheduler: asha\n", "--max-epochs", "4"),
    ),
    Case(
        "--cpus-per-trial nan",
        "--cpus-per-trial: expected a finite number, got nan",
        run_file(TINY, "--cpus-per-trial", "nan"),
    ),
    Case("--storage-path under a file", "is a file, not a folder", storage_is_a_file),
    Case(
        "an --address nobody answers",
        "--address 127.0.0.1:1: no Ray cluster answers there",
        run_file(TINY, "--address", "127.0.0.1:1"),
    ),
    Case(
        "a name that leaves the storage folder",
        "--name: expected a name of letters, digits and ._+-",
        run_file(TINY, "--name", "../../outside"),
    ),
    Case("two files with one name", "name: 'tiny' is also the name of", two_files_one_name),
    Case("validate: two files with one name", "name: 'tiny' is also the name of", validate_two_files_one_name),
    Case("one file given twice", "a.yaml: given twice; each file runs once", one_file_twice),
    Case(
        "a value listed twice in a grid",
        "space.seed.grid: 0 is listed twice; each value is one set of trials",
        run_file(tiny_with("seed: {grid: [0, 0, 1]}")),
    ),
    Case(
        "num_train above the dataset's split",
        "space.num_train: 5000 is more than the 1212 images of the digits train split left after the validation split",
        run_file(TINY.replace("synthetic", "digits").replace("num_train: 128", "num_train: 5000")),
    ),
    Case(
        "device cuda with resources.gpu 0",
        "space.device: 'cuda' needs a GPU in each trial, but resources.gpu is 0",
        run_file(TINY + "resources: {gpu: 0}\n", "--set", "device=cuda"),
    ),
    Case(
        "an optuna search with nothing sampled",
        "search.type: optuna has nothing to search: no field in space is sampled",
        run_file(TINY + "search: {type: optuna}\n"),
    ),
    Case(
        "TPE's start-up trials in a search that is not optuna",
        "search.n_startup_trials: only an optuna search has start-up trials, but search.type is grid",
        run_file(TINY + "search: {n_startup_trials: 5}\n"),
    ),
    Case(
        "device cuda on a machine without a GPU",
        "space.device: 'cuda' needs a GPU in each trial, but trials ask for 0 GPUs",
        run_file(TINY, "--set", "device=cuda"),
        starts_ray=True,
    ),
    Case("resume: a missing folder", "no such experiment folder", resume_of("missing")),
    Case("resume: not a study folder", "not a study experiment folder (no study.yaml)", resume_of("plain")),
    Case("resume: only study.yaml", "no Tune experiment state in it", resume_of("spec only")),
    Case("resume: half-written", "no Tune experiment state in it", resume_of("half")),
    Case("resume: growing a grid search", "is a grid search, whose trials", grow(TINY, 3)),
    Case("resume: growing a search to fewer trials", "has num_samples 4 already", grow(OPTUNA_TINY, 4)),
    Case(
        "resume: a trial folder that is a symbolic link", "trial-s0-00000: is a symbolic link", resume_of("trial link")
    ),
    Case("imagefolder: a truncated JPEG", "x.jpg: unreadable image", imagefolder("truncated")),
    Case("imagefolder: a zero-byte PNG", "empty.png: unreadable image", imagefolder("empty")),
    Case("imagefolder: one class", "1 class folder(s); a classifier needs at least 2", imagefolder("one class")),
    Case(
        "selection on validation without a split",
        "metric: val_acc needs a validation split, but val_size is 0",
        run_file(tiny_with("val_size: 0")),
    ),
    Case(
        "a split that leaves nothing to train",
        "space.val_size: 1347 holds out 1347 of the 1347 images",
        run_file(TINY.replace("synthetic", "digits").replace("  num_train: 128\n", "") + "  val_size: 1347\n"),
    ),
    Case(
        "a loss maximised",
        "mode: val_loss is better when lower, so mode must be min",
        run_file(TINY, "--metric", "val_loss"),
    ),
    Case(
        "a field the trial's model does not read",
        "space.fc_width: model mlp (variant m) does not read fc_width, a field of cnn",
        run_file(TINY.replace("  model: cnn\n", "").replace("  channels: 8\n", "") + "variants: {m: {model: mlp}}\n"),
    ),
    Case("an unknown flag", "unrecognized arguments: --frobnicate", run_file(TINY, "--frobnicate")),
    Case(
        "export: `--out` in a missing folder",
        "no such folder",
        lambda folder: ["export", folder, "--out", os.path.join(folder, "missing", "model.pt")],
    ),
    Case(
        "export: `--out` that is a folder",
        "is a folder; expected a file name",
        lambda folder: ["export", folder, "--out", folder],
    ),
    Case(
        "export: `--out` ending in /",
        "expected a file name, e.g. model.pt",
        lambda folder: ["export", folder, "--out", os.path.join(folder, "new") + "/"],
    ),
    Case("export: empty `--out`", "--out '': expected a file name", lambda folder: ["export", folder, "--out", ""]),
    Case(
        "export: `--out` under a file",
        "is a file, not a folder",
        lambda folder: ["export", folder, "--out", os.path.join(write(folder, "afile", "x"), "model.pt")],
    ),
    Case("`--data-dir` that is a file", "afile is a file; expected a folder", data_dir_is_a_file),
    Case(
        "predict: a model file without classes", "classes: expected a list of class names", predict_with(drop="classes")
    ),
    Case(
        "predict: num_classes that is not the classes list's length",
        "classes: 3 names for num_classes 5",
        predict_with(num_classes=5),
    ),
    Case(
        "predict: a head of another size than num_classes",
        "state_dict: classifier.4.weight has shape (3, 8), the model's is (4, 8)",
        predict_with(num_classes=4, classes=["a", "b", "c", "d"]),
    ),
    Case(
        "predict: model_kwargs of a wrong type",
        "model_kwargs.channels: expected an integer, got 'wide'",
        predict_with(model_kwargs={"channels": "wide", "batch_norm": False, "fc_width": 8, "dropout": 0.0}),
    ),
    Case(
        "predict: model_kwargs of another model",
        "model_kwargs: cnn takes channels, batch_norm, fc_width, dropout; got hidden",
        predict_with(model_kwargs={"hidden": 8}),
    ),
    Case(
        "predict: model_kwargs that make a huge model",
        "MB model, more than the 4096 MB a model may take",
        predict_with(model_kwargs={"channels": 2048, "batch_norm": False, "fc_width": 16384, "dropout": 0.0}),
    ),
    Case(
        "predict: a weight of the wrong shape",
        "state_dict: features.0.weight has shape (2, 2), the model's is (4, 3, 5, 5)",
        predict_with(state_dict=wrong_tensor("features.0.weight", (2, 2))),
    ),
    Case(
        "predict: an unknown model", "model: expected one of cnn, mlp, resnet18, got 'vgg'", predict_with(model="vgg")
    ),
    Case(
        "predict: a PNG of 30000x30000 pixels",
        "image too large (900,000,000 pixels",
        predict_with(png_claiming(30000, 30000)),
    ),
    Case(
        "predict: a PNG of 12000x12000 pixels",
        "image too large (144,000,000 pixels",
        predict_with(png_claiming(12000, 12000)),
    ),
    Case(
        "predict: an EPS file named .png",
        "photo.png: not an image in a format read here (PNG, JPEG, BMP, GIF, TIFF, WEBP)",
        predict_with(EPS, "photo.png"),
    ),
    Case(
        "an s3:// storage whose endpoint does not answer",
        "cannot reach this storage (When getting information for bucket 'b'",
        lambda folder: ["analyze", "s3://b/results/exp?endpoint_override=127.0.0.1:9&scheme=http"],
    ),
]


def run_case(case: Case, folder: str, argv: list[str] | None = None) -> tuple[int, str]:
    """Run the case's command in-process; (exit code, stderr)."""
    from study.cli import main

    argv = argv or case.make(folder)
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = main(argv)
    return code, err.getvalue()


def markdown() -> str:
    rows = ["| bad input | message |", "|---|---|"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            _, err = run_case(case, folder)
            line = err.strip().replace(folder, "...").replace("|", "\\|")
        if len(line) > 400:
            line = line[:400] + " ..."
        rows.append(f"| {case.what} | `` {line} `` |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
