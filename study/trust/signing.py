"""HMAC signatures with the user's key: the experiment's own files, each checkpoint, each trial's results.

Ray keeps Tune's state as pickles (`tuner.pkl`, the pickled fields of `experiment_state-*.json`,
the search and callback state), and `Tuner.restore` unpickles them: a folder from someone else
could run their code. So `study` signs the files of every experiment it writes, with an
HMAC-SHA256 keyed by a secret of this user's (created on first use, mode 0600), and `study resume`
checks the signature before Ray opens anything. A folder that is unsigned, or that changed after
it was signed, is refused unless the user passes --trust after reading it.

The manifest (`.study-signature.json`) maps each top-level file of the experiment folder to its
MAC. Files that no one unpickles and that a resume rewrites (environment.json, Ray's storage
marker, the running driver's lock) are left out; every other file must be listed and match, so a planted extra pickle fails.

A folder on a URI (s3://...) is signed the same way, through pyarrow (`study.storage`): each
object is written whole, so the manifest there needs no rename.

Checkpoints and results are signed with the same key, each bound to its trial (folder name):
the trial signs each checkpoint as it writes it (`signature.json` beside `trainer.pt` and
`meta.json`, bound to the epoch too), and the driver signs each trial's `result.json` and
`params.json` (`.study-results-signature.json` in the trial folder). A checkpoint copied from
another trial, or a meta.json rewritten, no longer matches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets

from study import storage
from study.errors import StudyError
from study.names import CHECKPOINT_FILE, CHECKPOINT_SIGNATURE, META_FILE

MANIFEST = ".study-signature.json"
UNSIGNED = (MANIFEST, "environment.json", ".validate_storage_marker", ".study-lock")
KEY_BYTES = 32
RESULTS_SIGNATURE = ".study-results-signature.json"  # in each trial folder
RESULT_FILES = ("params.json", "result.json")


def secret_path() -> str:
    """$XDG_CONFIG_HOME/cifar-study/secret (default ~/.config/cifar-study/secret)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "cifar-study", "secret")


def secret_key() -> bytes:
    """This user's signing key; made on first use, readable by this user alone (0600).

    A new key is written beside its place, then linked there: a reader (a trial starting on
    another core) never sees one cut short, and of two first users, one key wins for both.
    """
    path = secret_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        tmp = f"{path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            os.remove(tmp)
    with open(path, "rb") as f:
        key = f.read()
    if len(key) < KEY_BYTES:
        raise StudyError(
            f"{path}: signing key is damaged (shorter than {KEY_BYTES} bytes); delete it to make a new one"
        )
    return key


def existing_key() -> bytes | None:
    """This user's key if there is one: reading results never makes a key (nor writes anything)."""
    try:
        with open(secret_path(), "rb") as f:
            key = f.read()
    except OSError:
        return None
    return key if len(key) >= KEY_BYTES else None


def signed_files(folder: str) -> list[str]:
    if storage.is_uri(folder):
        return sorted(name for name, is_dir in storage.list_dir(folder) if not is_dir and name not in UNSIGNED)
    return sorted(
        name for name in os.listdir(folder) if os.path.isfile(os.path.join(folder, name)) and name not in UNSIGNED
    )


def mac_of(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, digestmod=hashlib.sha256).hexdigest()


def mac(key: bytes, path: str) -> str:
    if storage.is_uri(path):
        return mac_of(key, storage.read_bytes(path))
    digest = hmac.new(key, digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sign(folder: str, key: bytes | None = None) -> None:
    """Write the manifest for the folder's files as they are now (through a rename: never half)."""
    key = key or secret_key()
    manifest = {name: mac(key, storage.join(folder, name)) for name in signed_files(folder)}
    write_manifest(folder, manifest)


def write_manifest(folder: str, manifest: dict[str, str]) -> None:
    """The manifest, written whole (locally through a temporary name; never through a link)."""
    storage.write_text(storage.join(folder, MANIFEST), json.dumps(manifest, indent=1))


def problems(folder: str, key: bytes | None = None) -> list[tuple[str, str]]:
    """(file, why) for every file whose signature does not hold; [] when the folder is as signed."""
    key = key or secret_key()
    try:
        manifest = json.loads(storage.read_text(storage.join(folder, MANIFEST)))
    except FileNotFoundError:
        return [(MANIFEST, "missing (not signed by this user's `study run`)")]
    except (OSError, ValueError):
        return [(MANIFEST, "unreadable")]
    if not isinstance(manifest, dict):
        return [(MANIFEST, "unreadable")]
    found = []
    names = signed_files(folder)
    for name in names:
        expected = manifest.get(name)
        if not isinstance(expected, str):
            found.append((name, "not signed"))
        elif not hmac.compare_digest(expected, mac(key, storage.join(folder, name))):
            found.append((name, "does not match its signature (changed since, or signed by another user)"))
    found += [(name, "signed but missing") for name in manifest if name not in names and name not in UNSIGNED]
    return found


def problem(folder: str, key: bytes | None = None) -> str | None:
    """The first problem as "file: why", or None when the folder is as signed."""
    found = problems(folder, key)
    return f"{found[0][0]}: {found[0][1]}" if found else None


def file_digest(path: str) -> str:
    """SHA-256 of a local file or a storage URI's object."""
    digest = hashlib.sha256()
    if storage.is_uri(path):
        digest.update(storage.read_bytes(path))
        return digest.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bound_mac(key: bytes, binding: dict, files: dict[str, str]) -> str:
    """HMAC of what a signature binds (trial, epoch) and the SHA-256 of each of `files` (name -> path)."""
    message = {**binding, "files": {name: file_digest(path) for name, path in sorted(files.items())}}
    return hmac.new(key, json.dumps(message, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def write_json(path: str, record: dict) -> None:
    """Through a rename: a signature is never half written."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def read_signature(path: str) -> dict | None:
    """A signature file's record, or None when absent, unreadable or not of that shape."""
    try:
        if storage.is_uri(path):
            text = storage.read_text(path)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(10_000)  # a signature is ~200 bytes; a planted huge file is not read
        record = json.loads(text)
    except (OSError, ValueError, StudyError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("mac"), str) else None


def checkpoint_files(folder: str) -> dict[str, str]:
    return {name: storage.join(folder, name) for name in (CHECKPOINT_FILE, META_FILE)}


def sign_checkpoint(folder: str, trial: str, epoch: int, key: bytes | None = None) -> None:
    """Sign a checkpoint folder's trainer.pt and meta.json as the trial `trial`'s, of `epoch`."""
    binding = {"kind": "checkpoint", "trial": trial, "epoch": epoch}
    mac_hex = bound_mac(key or secret_key(), binding, checkpoint_files(folder))
    write_json(os.path.join(folder, CHECKPOINT_SIGNATURE), {**binding, "mac": mac_hex})


def checkpoint_problem(folder: str, key: bytes | None = None, trial: str | None = None) -> str | None:
    """Why a checkpoint folder (local or URI) is not this user's signed checkpoint of `trial`
    (default: the folder it is in) and its meta.json's epoch; None when it is."""
    record = read_signature(storage.join(folder, CHECKPOINT_SIGNATURE))
    if record is None:
        return f"not signed (no readable {CHECKPOINT_SIGNATURE}: not written by this user's trials)"
    try:
        meta = json.loads(read_head(storage.join(folder, META_FILE), 50_000_000))  # study.checkpoints' bound
        epoch = meta["epoch"]
    except (OSError, ValueError, KeyError, TypeError, StudyError):
        return f"{META_FILE} missing or unreadable"
    trial = trial or storage.basename(storage.parent(folder))
    binding = {"kind": "checkpoint", "trial": trial, "epoch": epoch}
    try:
        expected = bound_mac(key or secret_key(), binding, checkpoint_files(folder))
    except (OSError, StudyError):
        return f"{CHECKPOINT_FILE} or {META_FILE} missing"
    if not hmac.compare_digest(expected, record["mac"]):
        return (
            f"does not match its signature (trainer.pt or meta.json changed since, a checkpoint of another "
            f"trial than {trial}, or signed with another user's key)"
        )
    return None


def read_head(path: str, limit: int | None = None) -> bytes:
    """The first `limit` bytes (all without one) of a local file or a storage URI's object."""
    if storage.is_uri(path):
        data = storage.read_bytes(path)
        return data if limit is None else data[:limit]
    with open(path, "rb") as f:
        return f.read() if limit is None else f.read(limit)


def results_mac(key: bytes, trial: str, params: bytes, result: bytes) -> str:
    """HMAC of a trial's params.json and of result.json as far as it was when signed."""
    message = {
        "kind": "results",
        "trial": trial,
        "result_bytes": len(result),
        "files": {"params.json": hashlib.sha256(params).hexdigest(), "result.json": hashlib.sha256(result).hexdigest()},
    }
    return hmac.new(key, json.dumps(message, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def sign_results(trial_dir: str, key: bytes | None = None) -> bool:
    """Sign a local trial folder's params.json and result.json as they are now; False if it has none.

    result.json only grows (Tune appends a line per result), so the signature records how many
    of its bytes it covers: rows appended since (a driver killed before signing them) leave the
    signed ones checkable.
    """
    params, result = (os.path.join(trial_dir, name) for name in RESULT_FILES)
    if not (os.path.isfile(params) and os.path.isfile(result)):
        return False
    trial = os.path.basename(trial_dir.rstrip("/"))
    params_data = read_head(params)
    try:  # Ray may be writing it (a trial starting, or a copy to storage): signed at the next pass
        json.loads(params_data)
    except ValueError:
        return False
    data = read_head(result)
    data = data[: data.rfind(b"\n") + 1]  # whole rows only; one being written is signed at the next pass
    record = {"kind": "results", "trial": trial, "result_bytes": len(data)}
    write_json(
        os.path.join(trial_dir, RESULTS_SIGNATURE),
        {**record, "mac": results_mac(key or secret_key(), trial, params_data, data)},
    )
    return True


SIGNED, GROWN, FORGED, NOT_SIGNED = "signed", "grown", "forged", "not signed"  # results_state


def results_state(trial_dir: str, key: bytes | None) -> str:
    """A trial folder's (local or URI) results against this user's signature: SIGNED as signed;
    GROWN, rows appended after the signed ones; FORGED, what was signed changed (or another
    trial's, or another user's key); NOT_SIGNED, no signature, no key to check it with, or a
    result.json shorter than what was signed (cut short by a crash: nothing left to check)."""
    record = read_signature(storage.join(trial_dir, RESULTS_SIGNATURE))
    size = record.get("result_bytes") if record else None
    if record is None or key is None or type(size) is not int or size < 0:
        return NOT_SIGNED
    trial = storage.basename(trial_dir)
    try:
        params = read_head(storage.join(trial_dir, RESULT_FILES[0]))
        result = read_head(storage.join(trial_dir, RESULT_FILES[1]), size + 1)
    except (OSError, StudyError):
        return FORGED
    if len(result) < size:  # cut short (a driver killed while Ray copied it): its rows cannot be checked
        return NOT_SIGNED
    if not hmac.compare_digest(results_mac(key, trial, params, result[:size]), record["mac"]):
        return FORGED
    return GROWN if len(result) > size else SIGNED


def results_signed(trial_dir: str, key: bytes | None) -> bool:
    """Whether a trial folder's params.json and result.json are, whole, as this user's driver signed them."""
    return results_state(trial_dir, key) == SIGNED


def sign_all_results(experiment_path: str, key: bytes | None = None, seen: dict | None = None) -> None:
    """sign_results for every trial folder of a local experiment. With `seen` (kept by the caller
    between calls), folders whose files kept their size and time are not hashed again."""
    key = key or secret_key()
    for entry in os.scandir(experiment_path):
        if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
            continue
        try:
            stamp = tuple(
                (s.st_mtime_ns, s.st_size) for s in (os.stat(os.path.join(entry.path, n)) for n in RESULT_FILES)
            )
        except OSError:
            continue  # no results yet
        if seen is not None and seen.get(entry.name) == stamp:
            continue
        if sign_results(entry.path, key) and seen is not None:
            seen[entry.name] = stamp
