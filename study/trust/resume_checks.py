"""What a resume or an export checks before it believes a folder: signatures, state, results."""

from __future__ import annotations

import fnmatch
import os
import sys

from study import storage
from study.errors import StudyError
from study.names import SPEC_FILE
from study.trust import signing
from study.trust.experiment_state import BACKUP_DIR, STATE_GLOB, repair_state, restore_backup, signed_bundle
from study.trust.recovery import unsigned_to_resume, verify_checkpoints


def check_resumable(path: str, trust: bool) -> None:
    """Everything a resume needs, checked before Ray opens a file of the folder.

    The folder must hold Tune's state (a run killed before its first step has none), signed by
    this user's `study run` unless `trust` (see `study.trust.signing`), as must every checkpoint an
    unfinished trial may continue from; and every trial's checkpoint must load.
    """
    uri = storage.is_uri(path)
    if not uri:
        storage.refuse_links_in_experiment(path)  # before anything, a restore of the backup included
    states = [n for n, is_dir in storage.list_dir(path) if not is_dir and fnmatch.fnmatch(n, STATE_GLOB)]
    if not states:
        raise StudyError(
            f"{path}: no Tune experiment state in it (the run stopped before its first trial started); "
            "nothing to resume: delete the folder and run the file again"
        )
    if not trust:  # first: a file that is cut short or planted must not be "repaired" into trust
        check_signature(path)
    if uri:
        return  # objects are replaced whole: nothing cut short to repair; checkpoints load in the trials
    repair_state(path)
    if not trust and (found := unsigned_to_resume(path)):
        folder, why = found[0]
        raise StudyError(
            f"{folder}: {why}; refusing to resume from it: delete that checkpoint folder, or if you have "
            "read it and trust it, pass --trust"
        )
    if not trust:
        check_results_signed(path)

    for warning in verify_checkpoints(path):
        print(f"[study] warning: {warning}", file=sys.stderr)


# Files Tune rewrites at every step: after a crash they can be newer than their signature.
TUNE_STATE_FILES = (
    "experiment_state-*.json",
    "callback-states-*.pkl",
    "basic-variant-state-*.json",
    "searcher-state-*",
)


def check_signature(path: str) -> None:
    """Refuse a folder this user's `study run` did not sign, or that changed since.

    One exception keeps a crash resumable in one step: when only Tune's per-step state files
    are newer than their signature (a driver killed between Tune's save and the signing), the
    signed backup copy of them (at most a second older) is put back, and the resume says so.
    """

    def tune_state(name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in TUNE_STATE_FILES)

    # Name the most telling file: a pickle of Ray's first, then study.yaml, then the per-step state.
    found = sorted(signing.problems(path), key=lambda problem: (tune_state(problem[0]), problem[0] == SPEC_FILE))
    if not found:
        return
    stale_state = all(why.startswith("does not match") and tune_state(name) for name, why in found)
    if storage.is_uri(path):
        backup_whole = signed_bundle(path) is not None
    else:
        backup = os.path.join(path, BACKUP_DIR)
        backup_whole = os.path.isdir(backup) and not signing.problems(backup)
    if stale_state and backup_whole:
        restore_backup(path)
        if not signing.problems(path):
            names = ", ".join(name for name, _ in found)
            print(
                f"[study] {names}: changed since it was signed (a driver stopped between Tune's save and the "
                f"signing, or a damaged file); resuming from the signed copy in {BACKUP_DIR}/",
                file=sys.stderr,
            )
            return
    name, why = found[0]
    if name == SPEC_FILE:
        raise StudyError(
            f"{storage.join(path, name)}: {why}; a resume runs the study as it was saved (Ray keeps its own "
            "copy), so an edit would be ignored: undo it, or run the edited file as a new study"
        )
    raise StudyError(
        f"{storage.join(path, name)}: {why}; refusing to resume, since Ray would unpickle the folder's "
        "state: if you wrote this folder, or have read it and trust it, pass --trust"
    )


def check_results_signed(path: str) -> None:
    """Refuse a trial whose params.json or signed rows of result.json changed since this user's
    driver signed them: the resumed run would sign them again, as its own. Rows appended after
    the signature (a driver killed before it signed them) and unsigned trials are let through."""
    key = signing.secret_key()
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) and signing.results_state(entry.path, key) == signing.FORGED:
            raise StudyError(
                f"{os.path.join(entry.path, 'result.json')}: does not match its signature (it or params.json "
                "changed since, another trial's, or signed with another user's key); refusing to resume, "
                "which would sign it as yours: if you have read it and trust it, pass --trust"
            )


def check_results_to_export(trial_dir: str) -> None:
    """The exported trial's result.json chose it and labels its metrics: it must be as this user's
    driver signed it (rows appended since, by a run that goes on or a crash, do not count)."""
    state = signing.results_state(trial_dir, signing.secret_key())
    if state in (signing.FORGED, signing.NOT_SIGNED):
        why = "does not match its signature" if state == signing.FORGED else "not signed by your key"
        raise StudyError(
            f"{storage.join(trial_dir, 'result.json')}: {why}; its metrics chose this trial and would label the "
            "exported model: if you have read it and trust it, pass --trust"
        )
