"""Signatures on the experiment files that `study resume` must unpickle.

Ray keeps Tune's state as pickles (`tuner.pkl`, the pickled fields of `experiment_state-*.json`,
the search and callback state), and `Tuner.restore` unpickles them: a folder from someone else
could run their code. So `study` signs the files of every experiment it writes, with an
HMAC-SHA256 keyed by a secret of this user's (created on first use, mode 0600), and `study resume`
checks the signature before Ray opens anything. A folder that is unsigned, or that changed after
it was signed, is refused unless the user passes --trust after reading it.

The manifest (`.study-signature.json`) maps each top-level file of the experiment folder to its
MAC. Files that no one unpickles and that a resume rewrites (environment.json, Ray's storage
marker) are left out; every other file must be listed and match, so a planted extra pickle fails.

A folder on a URI (s3://...) is signed the same way, through pyarrow (`study.storage`): each
object is written whole, so the manifest there needs no rename.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets

from study import storage
from study.errors import StudyError

MANIFEST = ".study-signature.json"
UNSIGNED = (MANIFEST, "environment.json", ".validate_storage_marker")
KEY_BYTES = 32


def secret_path() -> str:
    """$XDG_CONFIG_HOME/cifar-study/secret (default ~/.config/cifar-study/secret)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "cifar-study", "secret")


def secret_key() -> bytes:
    """This user's signing key; made on first use, readable by this user alone (0600)."""
    path = secret_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) < KEY_BYTES:
            raise StudyError(
                f"{path}: signing key is damaged (shorter than {KEY_BYTES} bytes); delete it to make a new one"
            ) from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


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
    if storage.is_uri(folder):
        storage.write_text(storage.join(folder, MANIFEST), json.dumps(manifest, indent=1))
        return
    tmp = os.path.join(folder, f"{MANIFEST}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(folder, MANIFEST))


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
