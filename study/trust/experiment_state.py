"""Tune's experiment state on disk: find it, tell a whole file from a cut one, repair it. No Ray.

Ray writes `experiment_state-*.json` (and the search state beside it) in place, after a step. A
driver killed during that write leaves a truncated file that neither `Tuner.restore` nor the
analysis can read, and the whole study looks lost although every trial's checkpoints are intact.
`study.trust.state_backup.StateBackup` keeps a copy of the last state that parsed; `repair_state` puts
it back before a resume, and an analysis reads it in place of the live file (`state_to_read`),
never changing the folder. On a URI (s3://...) an object is replaced whole, never cut short, so
there is nothing to repair; the signed copy is still kept (one zip, see `bundle`), and put back
when Tune's state is newer than its signature (see `study.trust.resume_checks.check_signature`).
"""

from __future__ import annotations

import glob
import hmac
import io
import json
import os
import shutil
import sys
import time
import zipfile
from typing import Any

from study import storage
from study.errors import StudyError
from study.storage import is_uri
from study.trust import signing

BACKUP_DIR = ".study-state-backup"
BUNDLE = "state.zip"  # the backup on a URI, inside BACKUP_DIR (see `bundle`)
STATE_GLOB = "experiment_state-*.json"


def state_files(experiment_path: str) -> list[str]:
    """The experiment folder's own files (state, search state, tuner.pkl), not the trial folders."""
    if is_uri(experiment_path):
        return [storage.join(experiment_path, n) for n, is_dir in storage.list_dir(experiment_path) if not is_dir]
    return sorted(p for p in glob.glob(os.path.join(experiment_path, "*")) if os.path.isfile(p))


def readable(path: str) -> bool:
    """Whole, as far as can be told without unpickling (see `whole`)."""
    try:
        if is_uri(path):
            return whole(storage.basename(path), storage.read_bytes(path))
        with open(path, "rb") as f:
            return whole(path, f.read())
    except OSError:
        return False


def whole(name: str, data: bytes) -> bool:
    """JSON must parse. A pickle (Ray writes some under .json names too) must be non-empty and end
    with pickle's STOP opcode ("."), which a write under way (Ray truncates, then writes) lacks."""
    if data[:1] == b"\x80":  # pickle protocol 2 and later
        return data.endswith(b".")
    if name.endswith((".json", ".pkl")):
        try:
            json.loads(data)
        except ValueError:  # empty, cut short, or an unrecognised pickle
            return False
    return True


def restore_backup(experiment_path: str) -> None:
    """Put the backup copy back: its files (and signature) over the live ones.

    Top-level files the backup does not hold are moved aside to `.study-set-aside/`, not
    deleted: Ray would otherwise pick up a newer (or planted) state file beside the restored one.
    """
    if is_uri(experiment_path):
        restore_backup_uri(experiment_path)
        return
    backup = os.path.join(experiment_path, BACKUP_DIR)
    kept = {os.path.basename(p) for p in state_files(backup)}
    for p in state_files(experiment_path):
        name = os.path.basename(p)
        if name not in kept and name not in ("environment.json", ".validate_storage_marker"):
            aside = os.path.join(experiment_path, ".study-set-aside")
            os.makedirs(aside, exist_ok=True)
            os.replace(p, os.path.join(aside, name))
    for name in sorted(os.listdir(backup)):
        if os.path.isfile(os.path.join(backup, name)):
            shutil.copy2(os.path.join(backup, name), experiment_path)


def bundle(files: dict[str, bytes], manifest: dict[str, str]) -> bytes:
    """The backup on a URI: one zip of the state files and their signature, uploaded as one
    object, so that it is always whole (an object store has no folder rename)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in sorted(files.items()):
            z.writestr(name, data)
        z.writestr(signing.MANIFEST, json.dumps(manifest, indent=1))
    return out.getvalue()


def signed_bundle(experiment_path: str) -> dict[str, bytes] | None:
    """The backup bundle's files (its signature among them) if each matches that signature under
    this user's key; None when it is missing, unreadable, or does not match."""
    try:
        with zipfile.ZipFile(io.BytesIO(storage.read_bytes(storage.join(experiment_path, BACKUP_DIR, BUNDLE)))) as z:
            files = {name: z.read(name) for name in z.namelist()}
        manifest = json.loads(files[signing.MANIFEST])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    key = signing.secret_key()
    names = sorted(set(files) - {signing.MANIFEST})
    if not isinstance(manifest, dict) or sorted(manifest) != [n for n in names if n not in signing.UNSIGNED]:
        return None
    if not all(hmac.compare_digest(str(manifest[n]), signing.mac_of(key, files[n])) for n in manifest):
        return None
    return files


def restore_backup_uri(experiment_path: str) -> None:
    """`restore_backup` on an object store, from the signed bundle: copies and deletes."""
    files = signed_bundle(experiment_path) or {}
    for p in state_files(experiment_path):
        name = storage.basename(p)
        if name not in files and name not in ("environment.json", ".validate_storage_marker"):
            storage.move(p, storage.join(experiment_path, ".study-set-aside", name))
    for name, data in sorted(files.items(), key=lambda item: item[0] == signing.MANIFEST):  # signature last
        storage.write_bytes(storage.join(experiment_path, name), data)


def repair_state(experiment_path: str, settle_s: float = 2.0) -> bool:
    """If a state file (Tune's JSON state or a pickle beside it) is cut short, put the last good
    copy back. Returns True if it did. Tune's own restore would fail on it and start the
    experiment anew, empty, as if nothing had run."""
    if is_uri(experiment_path) or not os.path.isdir(experiment_path):
        return False
    broken = [p for p in state_files(experiment_path) if not readable(p)]
    if broken and max(time.time() - os.path.getmtime(p) for p in broken) < settle_s:
        time.sleep(settle_s)  # maybe a live run is writing it right now
        broken = [p for p in broken if not readable(p)]
    if not broken:
        return False
    backup = os.path.join(experiment_path, BACKUP_DIR)
    if not os.path.isdir(backup) or not all(readable(p) for p in state_files(backup)):
        raise StudyError(
            f"{broken[0]}: experiment state cut short (a crash mid-write) and no whole backup copy to restore"
        )
    restore_backup(experiment_path)
    print(
        f"[study] {os.path.basename(broken[0])} was cut short by a crash; restored the last good copy from {BACKUP_DIR}/",
        file=sys.stderr,
    )
    return True


def state_to_read(experiment_path: str) -> str | None:
    """The newest Tune state file of a local experiment, for reading only: the live one, or, when
    it is cut short, the backup's copy in its place (the folder is left as it is). None when the
    folder has no state file."""
    live = sorted(glob.glob(os.path.join(experiment_path, STATE_GLOB)))
    if not live or readable(live[-1]):
        return live[-1] if live else None
    copies = sorted(glob.glob(os.path.join(experiment_path, BACKUP_DIR, STATE_GLOB)))
    if not copies or not readable(copies[-1]):
        raise StudyError(f"{live[-1]}: experiment state cut short (a crash mid-write) and no whole backup copy")
    print(
        f"[study] {os.path.basename(live[-1])} was cut short by a crash; reading the last good copy in {BACKUP_DIR}/",
        file=sys.stderr,
    )
    return copies[-1]


def trial_states(state_uri: str) -> dict[str, dict[str, Any]]:
    """Trial folder name -> {trial_id, status, last_result} from Tune's state, read as plain JSON.

    Each trial's entry is a JSON string; the fields Ray pickles inside it stay the hex text they
    are, never unpickled. An unreadable state gives {} (statuses then come from the trial folders).
    """
    try:
        state = json.loads(storage.read_text(state_uri))
        entries = [(json.loads(item[0]), json.loads(item[1])) for item in state.get("trial_data", [])]
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}
    out = {}
    for trial, run in entries:
        if not (isinstance(trial, dict) and isinstance(trial.get("relative_logdir"), str)):
            continue
        last_result = run.get("last_result") if isinstance(run, dict) else None
        out[trial["relative_logdir"]] = {
            "trial_id": str(trial.get("trial_id")),
            "status": str(trial.get("status")),
            "last_result": last_result if isinstance(last_result, dict) else {},
        }
    return out
