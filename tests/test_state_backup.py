"""The backup of Tune's experiment state that survives a crash in the middle of Ray's write."""

import json
import os

import pytest

from study.errors import StudyError
from study.trust.experiment_state import BACKUP_DIR, repair_state
from study.trust.state_backup import StateBackup


def write_state(folder, payload) -> str:
    path = folder / "experiment_state-2026.json"
    path.write_text(json.dumps(payload))
    (folder / "search_gen_state-2026.json").write_text(json.dumps({"generated": payload["n"]}))
    return str(path)


def test_a_state_cut_short_is_restored_from_the_last_readable_copy(tmp_path):
    state = write_state(tmp_path, {"n": 1})
    backup = StateBackup(str(tmp_path), every_s=0)
    backup.on_step_end(0, [])
    write_state(tmp_path, {"n": 2})
    backup.on_step_end(1, [])  # the newest readable state is kept
    with open(state, "r+") as f:  # a crash mid-write: half a JSON document
        f.truncate(5)
    backup.on_step_end(2, [])  # an unreadable state never replaces the copy
    os.utime(state, (0, 0))  # written long ago: no live run is writing it
    assert repair_state(str(tmp_path)) is True
    assert json.loads(open(state).read()) == {"n": 2}
    assert json.loads((tmp_path / "search_gen_state-2026.json").read_text()) == {"generated": 2}
    assert repair_state(str(tmp_path)) is False  # nothing left to repair
    backed_up = sorted(os.listdir(tmp_path / BACKUP_DIR))
    assert backed_up == [".study-signature.json", "experiment_state-2026.json", "search_gen_state-2026.json"]


def test_a_state_cut_short_without_a_copy_is_a_clear_error(tmp_path):
    state = write_state(tmp_path, {"n": 1})
    with open(state, "r+") as f:
        f.truncate(3)
    os.utime(state, (0, 0))
    with pytest.raises(StudyError, match="experiment state cut short"):
        repair_state(str(tmp_path))


def test_a_pickle_cut_short_is_never_backed_up_and_is_restored(tmp_path, monkeypatch):
    """Ray writes callback-states-*.pkl in place; a copy caught at 0 bytes made Tune's restore fail
    and start the experiment anew, empty (seen once in CI)."""
    import pickle

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    write_state(tmp_path, {"n": 1})
    callbacks = tmp_path / "callback-states-2026.pkl"
    callbacks.write_bytes(pickle.dumps({"done": 1}))
    backup = StateBackup(str(tmp_path), every_s=0)
    backup.on_step_end(0, [])
    callbacks.write_bytes(b"")  # Ray's write under way
    write_state(tmp_path, {"n": 2})
    backup.on_step_end(1, [])  # not copied: the backup keeps the whole pickle
    assert (tmp_path / BACKUP_DIR / "callback-states-2026.pkl").read_bytes() == pickle.dumps({"done": 1})
    os.utime(callbacks, (0, 0))
    assert repair_state(str(tmp_path)) is True
    assert pickle.loads(callbacks.read_bytes()) == {"done": 1}


def test_a_pickle_rewritten_while_it_is_copied_never_replaces_the_backup(tmp_path, monkeypatch):
    """The state files parse when the backup starts, but Ray truncates and rewrites one in place
    while it is being copied: the copy is cut short, so the previous whole backup must stay (a
    driver SIGKILLed then had both the live file and its backup cut short; seen once in a test)."""
    import pickle
    import shutil

    from study.trust import state_backup

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    write_state(tmp_path, {"n": 1})
    callbacks = tmp_path / "callback-states-2026.pkl"
    callbacks.write_bytes(pickle.dumps({"done": 1}))
    backup = StateBackup(str(tmp_path), every_s=0)
    backup.on_step_end(0, [])
    write_state(tmp_path, {"n": 2})
    callbacks.write_bytes(pickle.dumps({"done": 2}))

    copy2 = shutil.copy2

    def copy_as_ray_writes(src, dst):
        if str(src).endswith(".pkl"):
            callbacks.write_bytes(pickle.dumps({"done": 3})[:5])  # Ray's rewrite, half done
        return copy2(src, dst)

    monkeypatch.setattr(state_backup.shutil, "copy2", copy_as_ray_writes)
    backup.on_step_end(1, [])
    assert (tmp_path / BACKUP_DIR / "callback-states-2026.pkl").read_bytes() == pickle.dumps({"done": 1})
    assert json.loads((tmp_path / BACKUP_DIR / "experiment_state-2026.json").read_text()) == {"n": 1}
    assert [p for p in os.listdir(tmp_path) if p.startswith(".study-state-new-")] == []  # no half copy left


def test_a_restored_backup_signs_and_copies_only_where_the_experiment_runs_now(tmp_path, monkeypatch):
    """Tune restores its callbacks from tuner.pkl, pickled in the folder the study started in. A
    copied or moved experiment, resumed, must be signed and backed up where it is, never there."""
    import shutil

    from study.trust.signing import MANIFEST
    from study.trust.state_backup import running_in

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    write_state(original, {"n": 1})
    backup = StateBackup(str(original), every_s=0)  # as unpickled from the original's tuner.pkl
    shutil.copytree(original, copy)
    with running_in(str(copy)):  # `study resume copy`
        backup.on_step_end(0, [])
    assert sorted(os.listdir(original)) == ["experiment_state-2026.json", "search_gen_state-2026.json"]
    assert (copy / MANIFEST).is_file() and (copy / BACKUP_DIR / "experiment_state-2026.json").is_file()
