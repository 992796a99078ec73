"""Where experiments live: a local folder or a URI (s3://, gs://, file://) through pyarrow.

Every storage question goes through here: is it a URI, does it exist, read or write a small
file, list the runs of a study, and create an experiment folder that no other run can take.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import secrets
import tempfile
import urllib.parse

import pyarrow
import pyarrow.fs

from study.errors import StudyError, reason

RUN_SUFFIX = re.compile(r"^-\d{8}-\d{6}(?:-\d+)?$")  # NAME-YYYYmmdd-HHMMSS[-N]


def is_uri(path: str) -> bool:
    return "://" in path


def normalize(path: str) -> str:
    """Ray wants an absolute local path or a URI (s3://, gs://, file://...)."""
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


# A URI's path is joined and split on its own: the query (pyarrow's
# `?endpoint_override=host:port&scheme=http`) stays at the end, where pyarrow reads it.


def join(storage: str, *parts: str) -> str:
    if not is_uri(storage):
        return "/".join([storage.rstrip("/"), *parts])
    url = urllib.parse.urlsplit(storage)
    return urllib.parse.urlunsplit(url._replace(path="/".join([url.path.rstrip("/"), *parts])))


def basename(path: str) -> str:
    if is_uri(path):
        path = urllib.parse.urlsplit(path).path
    return path.rstrip("/").rsplit("/", 1)[-1]


def parent(path: str) -> str:
    if not is_uri(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    url = urllib.parse.urlsplit(path)
    return urllib.parse.urlunsplit(url._replace(path=url.path.rstrip("/").rsplit("/", 1)[0]))


# An S3 endpoint that does not answer costs pyarrow's retries, seconds per call; the probe has
# none and a short connect timeout, so a wrong endpoint is one line at once.
PROBE_CONNECT_S = 3


@functools.cache
def probe(bucket_uri: str) -> str | None:
    """Why the bucket cannot be used (its endpoint does not answer, or it does not exist), or None
    when it can; asked once per bucket and query."""
    fs, bucket = pyarrow.fs.FileSystem.from_uri(bucket_uri)
    rebuild, (options,) = fs.__reduce__()
    retries = pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1)
    quick = rebuild({**options, "retry_strategy": retries, "connect_timeout": PROBE_CONNECT_S})
    try:
        found = quick.get_file_info(bucket).type != pyarrow.fs.FileType.NotFound
    except OSError as exc:
        return f"cannot reach this storage ({reason(exc, limit=240)})"
    return None if found else f"no bucket {bucket!r} at this endpoint; create it first"


def filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """pyarrow's file system and path for a folder or URI; an S3 endpoint is probed once first."""
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(normalize(uri))
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as exc:
        raise StudyError(f"{uri}: cannot open this storage path ({reason(exc)})") from None
    if isinstance(fs, pyarrow.fs.S3FileSystem):
        failed = probe(urllib.parse.urlsplit(normalize(uri))._replace(path="", fragment="").geturl())
        if failed:
            raise StudyError(f"{uri}: {failed}")
    return fs, path


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def is_file(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def json_lines(text: str) -> list[dict]:
    """The objects of a JSON-lines file such as Tune's result.json, one per line; a line cut short
    by a crash mid-write is skipped, so the lines before it still count."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def symlink_refused(path: str) -> StudyError:
    return StudyError(
        f"{path}: is a symbolic link where study expects its own file or folder; study writes only inside "
        "the folder it was given and does not follow it: remove the link"
    )


def check_no_symlink(root: str, path: str) -> None:
    """Refuse (one line) when `path`, or a folder between `root` and it, is a symbolic link: a
    write there would land outside `root`. Parts that do not exist yet are fine."""
    rel = os.path.relpath(path, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise StudyError(f"{path}: outside {root}; study writes only inside the folder it was given")
    current = root
    for part in [] if rel == os.curdir else rel.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise symlink_refused(current)


def make_folder(root: str, path: str) -> None:
    """Create `path` (and the folders up to it) inside `root`, never through a symbolic link."""
    check_no_symlink(root, path)
    os.makedirs(path, exist_ok=True)


def write_file(path: str, data: str | bytes, root: str | None = None) -> None:
    """Write a local file whole, inside `root` (default: its own folder), never through a link.

    The data goes to a new temporary name (O_EXCL | O_NOFOLLOW: never an existing file or link),
    then a rename, which replaces a name and never follows it. A symbolic link at `path` or
    between `root` and it is refused instead (see `check_no_symlink`).
    """
    folder = os.path.dirname(path)
    check_no_symlink(root or folder, path)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def write_text(uri: str, text: str) -> None:
    """Write a small file whole (see `write_bytes`)."""
    write_bytes(uri, text.encode("utf-8"))


def write_bytes(uri: str, data: bytes) -> None:
    """Write a small file whole: a local one through `write_file` (never through a link), a URI's
    through pyarrow (an object store's object appears whole when its upload ends)."""
    if not is_uri(uri):
        write_file(uri, data)
        return
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.delete_file(path)


def move(source: str, target: str) -> None:
    """Move a file (on an object store: a copy, then a delete)."""
    fs, path = filesystem(source)
    fs.move(path, filesystem(target)[1])


def check_writable(storage: str, flag: str = "--storage-path") -> None:
    """A local storage path must be a folder this user can write, and a URI's endpoint must
    answer; checked before Ray starts."""
    if is_uri(storage):
        filesystem(storage)
        return
    existing = storage
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StudyError(f"{flag} {storage}: {existing} is a file, not a folder")
    try:  # a real write: os.access() says yes to root even on a read-only file system
        os.rmdir(tempfile.mkdtemp(prefix=".study-write-test-", dir=existing))
    except OSError as exc:
        raise StudyError(f"{flag} {storage}: cannot write in {existing} ({exc.strerror})") from None


def runs_of(storage: str, name: str) -> list[str]:
    """The experiment folders of study `name` under storage: NAME or NAME-YYYYmmdd-HHMMSS[-N], oldest first."""
    names = [n for n, is_dir in list_dir(storage) if is_dir]
    own = [n for n in names if n == name or (n.startswith(name) and RUN_SUFFIX.match(n[len(name) :]))]
    return [join(storage, n) for n in sorted(own)]


def timestamped(name: str) -> str:
    return f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def name_taken(path: str) -> StudyError:
    return StudyError(f"--name: {path} already exists; pass --resume to continue it, or another --name")


def create_experiment_dir(storage: str, name: str, exact: bool) -> str:
    """Create a new experiment folder atomically and return its path.

    Local folders are made with an exclusive mkdir, so two runs started at the same moment can
    never share one: with `exact` (a name given by --name) a taken name is an error; otherwise
    the timestamped name gets a -2, -3, ... suffix. On a URI, where object stores have no
    exclusive create, an existing folder is refused.
    """
    base = name if exact else timestamped(name)
    if is_uri(storage):
        path = join(storage, base)
        if exists(path):
            raise name_taken(path)
        fs, folder = filesystem(path)
        fs.create_dir(folder, recursive=True)
        return path
    os.makedirs(storage, exist_ok=True)
    for attempt in range(1, 1000):
        path = join(storage, base if attempt == 1 else f"{base}-{attempt}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            if exact:
                raise name_taken(path) from None
    raise StudyError(f"{storage}: could not find a free folder name for {name}")


def refuse_links_in_experiment(path: str) -> None:
    """A resume lets Ray write into the experiment folder and its trial folders: a symbolic link
    among their entries (a trial folder, a checkpoint, a state file) would take a write outside."""
    for entry in os.scandir(path):
        if entry.is_symlink():
            raise symlink_refused(entry.path)
        if entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):
                if inner.is_symlink():
                    raise symlink_refused(inner.path)


def list_dir(uri: str) -> list[tuple[str, bool]]:
    """(name, is a folder) for each entry of a folder; [] when it does not exist."""
    fs, path = filesystem(uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted((i.base_name, i.type == pyarrow.fs.FileType.Directory) for i in infos)
