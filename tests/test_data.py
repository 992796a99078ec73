import os

import pytest
import torch
import torchvision.transforms.functional as TF

from study.config import TrialConfig
from study.data import AUGMENTATIONS, DATASETS
from study.data.augment import augment, crop_at, flip_where
from study.data.datasets import load_dataset
from study.data.loader import BatchLoader
from study.errors import StudyError


@pytest.fixture
def batch():
    return torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_augmentations_keep_shape_and_dtype(batch, name):
    out = augment(batch, name, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_flip_really_mirrors(batch):
    mask = torch.tensor([True, False] * 8)
    out = flip_where(batch, mask)
    for i in range(16):
        expected = TF.hflip(batch[i]) if mask[i] else batch[i]
        assert torch.equal(out[i], expected)
    assert torch.equal(out[0][..., 0], batch[0][..., -1])


def test_crop_matches_torchvision_per_image(batch):
    gen = torch.Generator().manual_seed(2)
    top, left = torch.randint(0, 9, (2, 16), generator=gen)
    out = crop_at(batch, top, left)
    for i in range(16):
        expected = TF.crop(TF.pad(batch[i], [4]), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(out[i], expected)


def test_random_augmentation_is_reproducible_from_the_generator(batch):
    a = augment(batch, "flip+crop", torch.Generator().manual_seed(3))
    b = augment(batch, "flip+crop", torch.Generator().manual_seed(3))
    c = augment(batch, "flip+crop", torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_augmentation_is_rejected(batch):
    with pytest.raises(ValueError, match="must be one of none, flip, crop, flip\\+crop"):
        augment(batch, "rotate", torch.Generator())


@pytest.mark.parametrize("n,batch_size", [(100, 32), (97, 10), (64, 64)])
def test_loader_yields_every_index_exactly_once_per_epoch(n, batch_size):
    # Label i marks image i, so the labels seen are the indices drawn.
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    loader = BatchLoader(
        images, torch.arange(n), batch_size, (0.5,) * 3, (0.25,) * 3, "flip+crop", torch.Generator().manual_seed(0)
    )
    epochs = [torch.cat([y for _, y in loader]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(n))
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch


def test_loader_normalises_with_the_dataset_stats():
    images = torch.full((4, 3, 32, 32), 255, dtype=torch.uint8)
    x, _ = next(iter(BatchLoader(images, torch.arange(4), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))))
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 2.0))  # (1.0 - 0.5) / 0.25


def test_digits_is_embedded_stratified_and_fixed():
    data = load_dataset("digits")
    assert data.train_x.shape[1:] == (3, 32, 32) and data.train_x.dtype == torch.uint8
    assert len(data.train_y) + len(data.test_y) == 1797 and data.num_classes == 10
    assert torch.bincount(data.test_y).min() >= 40  # every class in the test split
    assert torch.equal(load_dataset.__wrapped__("digits").test_y, data.test_y)


def test_synthetic_takes_any_size():
    data = load_dataset("synthetic", num_train=300, num_test=50)
    assert len(data.train_y) == 300 and len(data.test_y) == 50


def test_subset_cuts_to_num_train():
    data = load_dataset("digits", num_train=200, num_test=100)
    assert len(data.train_y) == 200 and len(data.test_y) == 100


def test_the_validation_split_is_fixed_by_the_data_and_split_seed_alone():
    """Every trial, whatever its seed or num_train, validates on the same held-out images, and
    trains on none of them; val_size 0 is the report's protocol: the whole split trains."""
    full = load_dataset("digits")
    data = load_dataset("digits", val_size=0.1, split_seed=0)
    assert len(data.val_y) == 135 and len(data.train_y) == 1347 - 135
    assert torch.equal(data.test_x, full.test_x) and load_dataset("digits", val_size=0).val_x is None

    def rows(x: torch.Tensor) -> set[bytes]:
        return {bytes(image.flatten().tolist()) for image in x}

    assert not rows(data.val_x) & rows(data.train_x)  # digits has no duplicate images across the split
    assert rows(data.val_x) | rows(data.train_x) == rows(full.train_x)
    cut = load_dataset("digits", num_train=200, val_size=0.1, split_seed=0)
    assert torch.equal(cut.val_x, data.val_x) and len(cut.train_y) == 200  # num_train takes from the rest
    assert torch.equal(load_dataset("digits", val_size=135, split_seed=0).val_y, data.val_y)  # a count
    other = load_dataset("digits", val_size=0.1, split_seed=1)
    assert not torch.equal(other.val_x, data.val_x)
    for seed in (0, 1):  # the trial's own seed plays no part
        cfg = TrialConfig(dataset="digits", seed=seed)
        assert torch.equal(load_dataset(**cfg.data_kwargs()).val_x, data.val_x)


def test_cifar_offline_is_one_clear_line(monkeypatch, tmp_path):
    from torchvision.datasets import CIFAR100

    from tests.conftest import UNREACHABLE

    monkeypatch.setattr(CIFAR100, "url", f"{UNREACHABLE}/cifar-100-python.tar.gz")
    with pytest.raises(StudyError) as err:
        load_dataset.__wrapped__("cifar100", str(tmp_path / "cifar"))
    message = str(err.value)
    assert "\n" not in message
    assert "cifar100" in message and str(tmp_path / "cifar") in message and "digits" in message
    assert list(tmp_path.iterdir()) == []  # the folder made for it, its lock and cache: all gone again


def test_a_data_dir_that_is_a_file_is_one_clear_line(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(StudyError, match=r"data_dir: .*afile is a file; expected a folder"):
        load_dataset.__wrapped__("digits", str(tmp_path / "afile"))


def test_imagefolder_reads_a_users_folders(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (48, 40), color).save(folder / f"{i}.png")
    data = load_dataset.__wrapped__("imagefolder", str(tmp_path))
    assert data.classes == ("cat", "dog")
    assert data.train_x.shape == (6, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.train_x[0, 0].float().mean() == 255  # red cat


def test_imagefolder_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(StudyError, match="train"):
        load_dataset.__wrapped__("imagefolder", str(tmp_path))


def test_loader_max_batches_caps_the_epoch():
    images = torch.zeros(100, 3, 32, 32, dtype=torch.uint8)
    loader = BatchLoader(
        images, torch.arange(100), 10, (0.5,) * 3, (0.25,) * 3, "none", torch.Generator(), max_batches=3
    )
    assert len(loader) == 3 and sum(len(y) for _, y in loader) == 30


def test_loader_indices_yield_that_subset_in_order_without_a_copy():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 3, 4, 4).contiguous()
    subset = torch.tensor([7, 3, 41, 0, 19])
    loader = BatchLoader(images, torch.arange(50), 2, (0.0,) * 3, (1 / 255,) * 3, indices=subset)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [2, 2, 1]
    assert torch.cat([y for _, y in batches]).tolist() == subset.tolist()
    assert torch.cat([x[:, 0, 0, 0] for x, _ in batches]).tolist() == [7.0, 3.0, 41.0, 0.0, 19.0]
    assert loader.images is images  # gathered batch by batch from the split itself
    with pytest.raises(ValueError, match="no generator"):
        BatchLoader(images, torch.arange(50), 2, (0.0,) * 3, (1.0,) * 3, generator=torch.Generator(), indices=subset)


def test_channel_stats_in_chunks_match_the_direct_formula():
    from study.data.image_data import channel_stats

    x = torch.randint(0, 256, (500, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(x, chunk=128)
    direct = x.float().div(255).transpose(0, 1).reshape(3, -1)
    assert mean == pytest.approx(direct.mean(1).tolist(), abs=1e-6)
    assert std == pytest.approx(direct.std(1).tolist(), abs=1e-6)


def make_imagefolder(root) -> str:
    from PIL import Image

    for split in ("train", "test"):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (40, 40), color).save(root / split / cls / "0.png")
    return str(root)


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_dataset_loads_uint8_images_or_says_why_not(name, tmp_path, monkeypatch):
    """Each dataset of the registry, the way a trial loads it; a new one must be added here."""
    if name in ("cifar10", "cifar100"):  # no network here: the offline error, which names the way out
        from torchvision.datasets import CIFAR10, CIFAR100

        from tests.conftest import UNREACHABLE

        for cls in (CIFAR10, CIFAR100):
            monkeypatch.setattr(cls, "url", f"{UNREACHABLE}/x.tar.gz")
        with pytest.raises(StudyError, match=f"dataset {name}: not found in"):
            load_dataset.__wrapped__(name, str(tmp_path))
        return
    data_dir = {"imagefolder": lambda: make_imagefolder(tmp_path), "digits": str, "synthetic": str}[name]()
    data = load_dataset.__wrapped__(name, data_dir or str(tmp_path))
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and len(x) == len(y) > 0
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < data.num_classes
    assert data.num_classes >= 2 and len(data.mean) == len(data.std) == 3


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This test's own machine cache folder ($STUDY_CACHE_DIR), apart from the data folders."""
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


def test_imagefolder_decodes_once_and_again_when_a_file_changes(tmp_path, monkeypatch, cache):
    import study.data.sources as sources

    root = make_imagefolder(tmp_path / "images")
    before = sorted(p.relative_to(tmp_path / "images") for p in (tmp_path / "images").rglob("*"))
    first = load_dataset.__wrapped__("imagefolder", root)
    assert len(list(cache.glob("imagefolder-*.pt"))) == 1  # in the cache folder
    assert sorted(p.relative_to(tmp_path / "images") for p in (tmp_path / "images").rglob("*")) == before

    def no_decoding(folder, index):
        raise AssertionError("decoded although the cache holds this folder")

    monkeypatch.setattr(sources, "load_image", no_decoding)
    again = load_dataset.__wrapped__("imagefolder", root)  # from the memory-mapped cache
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_y, first.test_y)
    assert again.classes == first.classes == ("cat", "dog") and again.mean == first.mean
    os.utime(tmp_path / "images" / "train" / "cat" / "0.png", ns=(1, 1))  # the folder changed
    with pytest.raises(AssertionError, match="decoded although"):
        load_dataset.__wrapped__("imagefolder", root)


def count_loads(monkeypatch, name: str) -> list[int]:
    """Count the calls of dataset `name`'s own loader (the work the machine cache saves)."""
    loader = DATASETS.get(name)
    calls: list[int] = []

    def counted(**kwargs):
        calls.append(1)
        return loader(**kwargs)

    counted.source_key = loader.source_key
    monkeypatch.setitem(DATASETS._entries, name, counted)
    return calls


def test_a_dataset_loads_once_per_machine_and_each_cut_reads_the_cache(tmp_path, monkeypatch, cache):
    calls = count_loads(monkeypatch, "digits")
    whole = load_dataset.__wrapped__("digits", str(tmp_path))
    cut = load_dataset.__wrapped__("digits", str(tmp_path), num_train=100)  # as a new process would
    again = load_dataset.__wrapped__("digits", str(tmp_path))
    assert len(calls) == 1
    assert torch.equal(again.train_x, whole.train_x) and again.mean == whole.mean and again.classes == whole.classes
    assert len(cut.train_y) == 100 and len(cut.test_y) == len(whole.test_y)
    # The same cut whether the whole split came from the loader or from the cache.
    fresh = load_dataset.__wrapped__("digits", str(tmp_path / "elsewhere"), num_train=100)
    assert len(calls) == 2 and torch.equal(cut.train_x, fresh.train_x)


def test_synthetic_sizes_are_cached_apart(tmp_path, monkeypatch, cache):
    calls = count_loads(monkeypatch, "synthetic")
    small = load_dataset.__wrapped__("synthetic", str(tmp_path), num_train=64, num_test=32)
    large = load_dataset.__wrapped__("synthetic", str(tmp_path), num_train=128, num_test=32)
    assert (len(small.train_y), len(large.train_y), len(calls)) == (64, 128, 2)
    assert len(list(cache.glob("synthetic-*.pt"))) == 2


def test_a_damaged_cache_file_is_loaded_again_and_replaced(tmp_path, monkeypatch, cache):
    calls = count_loads(monkeypatch, "digits")
    first = load_dataset.__wrapped__("digits", str(tmp_path))
    (path,) = cache.glob("digits-*.pt")
    path.write_bytes(path.read_bytes()[:1000])  # cut short (a full disk, a copy stopped half-way)
    again = load_dataset.__wrapped__("digits", str(tmp_path))
    assert len(calls) == 2 and torch.equal(again.train_x, first.train_x)
    assert len(list(cache.glob("*.pt"))) == 1 and not list(tmp_path.rglob("*.tmp-*"))
    load_dataset.__wrapped__("digits", str(tmp_path))
    assert len(calls) == 2  # the rewritten file serves


def test_no_room_for_a_cache_still_loads(tmp_path, monkeypatch):
    calls = count_loads(monkeypatch, "digits")
    (tmp_path / "afile").write_text("a file where the cache folder would go")
    monkeypatch.setenv("STUDY_CACHE_DIR", str(tmp_path / "afile"))
    for _ in range(2):
        assert len(load_dataset.__wrapped__("digits", str(tmp_path / "data")).train_y) > 0
    assert len(calls) == 2 and (tmp_path / "afile").read_text().startswith("a file")


def test_a_read_only_data_folder_works_and_gets_no_file(tmp_path, monkeypatch, cache):
    """The cache goes to the cache folder, keyed by the data's path: the data folder is only read."""
    root = make_imagefolder(tmp_path / "images")
    os.chmod(root, 0o555)  # as root this does not stop writes: the listing below is the check
    try:
        before = sorted((tmp_path / "images").rglob("*"))
        load_dataset.__wrapped__("imagefolder", root)
        assert sorted((tmp_path / "images").rglob("*")) == before and list(cache.glob("imagefolder-*.pt"))
    finally:
        os.chmod(root, 0o755)
    other = make_imagefolder(tmp_path / "copy")  # the same files elsewhere: another key
    load_dataset.__wrapped__("imagefolder", other)
    assert len(list(cache.glob("imagefolder-*.pt"))) == 2


def test_a_failed_first_load_leaves_no_lock_behind(tmp_path, cache):
    root = make_imagefolder(tmp_path / "images")
    (tmp_path / "images" / "train" / "cat" / "1.png").write_bytes(b"")  # unreadable
    with pytest.raises(StudyError, match="1.png: unreadable image"):
        load_dataset.__wrapped__("imagefolder", root)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["test", "train"]
    assert not list(cache.glob("*"))


def test_a_cache_file_with_labels_outside_its_classes_is_not_used(tmp_path, monkeypatch, cache):
    calls = count_loads(monkeypatch, "digits")
    first = load_dataset.__wrapped__("digits", str(tmp_path))
    (path,) = cache.glob("digits-*.pt")
    fields = torch.load(path, weights_only=True)
    fields["train_y"] = fields["train_y"] + 100  # someone else's file, or a bug: labels with no class
    torch.save(fields, path)
    again = load_dataset.__wrapped__("digits", str(tmp_path))
    assert len(calls) == 2 and torch.equal(again.train_y, first.train_y)


DRIVER = """
import sys
from study.prepare import prepare_inputs
from study.space import parse_spec
from study.tuning.tuner import make_tuner
spec = parse_spec({"dataset": sys.argv[2], "space": {"model": "cnn", "data_dir": sys.argv[1], "num_train": 64}},
                  "driver.yaml", {})
prepare_inputs(spec)
print("after data check:", "torch" in sys.modules)
make_tuner(spec, sys.argv[1] + "/exp", {"cpu": 1, "gpu": 0})
print("after tuner:", "torch" in sys.modules)
"""


@pytest.mark.slow
def test_the_driver_imports_torch_only_to_make_a_machine_cache(tmp_path, monkeypatch, cache):
    """`study run`'s driver checks names, data and builds its Tuner without torch once the data is cached."""
    import subprocess
    import sys

    def driver(dataset: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, str(tmp_path), dataset], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    # The first check on this machine loads the data (torch) and writes the cache ...
    assert "after data check: True" in driver("synthetic")
    assert list(cache.glob("synthetic-*.pt"))
    # ... after which neither the check nor the Tuner (no TensorBoard logger) imports torch.
    assert driver("synthetic").splitlines() == ["after data check: False", "after tuner: False"]


@pytest.mark.slow
def test_study_run_keeps_its_cache_in_cache_dir_and_never_in_the_data_folder(tmp_path):
    """`--cache-dir` reaches the driver's data check and the trials' loads; the images stay untouched."""
    import subprocess
    import sys

    from study.data.cache import cache_path

    root = make_imagefolder(tmp_path / "images")
    before = sorted((tmp_path / "images").rglob("*"))
    space = tmp_path / "space.yaml"
    space.write_text(
        "dataset: imagefolder\nscheduler: {type: fifo}\n"
        "space: {model: cnn, channels: 4, fc_width: 8, epochs: 1, batch_size: 4, val_size: 1, seed: {grid: [0, 1]}}\n"
    )
    args = ["run", str(space), "--data-dir", root, "--cache-dir", str(tmp_path / "mine"), "--storage-path"]
    proc = subprocess.run(
        [sys.executable, "-m", "study", *args, str(tmp_path / "results")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted((tmp_path / "images").rglob("*")) == before
    loader = DATASETS.get("imagefolder")
    assert not os.path.exists(cache_path("imagefolder", loader, root))  # the tests' cache: the trials never wrote it
    os.environ["STUDY_CACHE_DIR"], session = str(tmp_path / "mine"), os.environ["STUDY_CACHE_DIR"]
    try:
        assert os.path.isfile(cache_path("imagefolder", loader, root))
    finally:
        os.environ["STUDY_CACHE_DIR"] = session
