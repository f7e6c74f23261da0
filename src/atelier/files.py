"""Files, written safely and named by content: atomic writes, sha256, the user's cache folder.

Writes are atomic: a temporary file in the target's directory is fsynced and renamed into place, so a crash never
leaves a half-written file under the real name. The lowest layer with ``errors.py``: nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from .errors import AtelierError

PathLike = Union[str, "os.PathLike[str]"]

# mkstemp creates files 0600; finished files get the mode a plain open() would give them. Python has no
# read-only umask call, so read it once at import time by setting and restoring it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def check_writable_parent(path: Path, verb: str = "write") -> None:
    """Refuse, before a long computation, a path whose folder is missing, not a folder or not writable."""
    parent = path.parent  # Path("out.png").parent is Path("."), the working directory
    if not parent.exists():
        raise AtelierError(f"cannot {verb} {path}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise AtelierError(f"cannot {verb} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AtelierError(f"cannot {verb} {path}: directory {parent} is not writable; choose another location or "
                           "fix its permissions")


def cache_dir() -> Path:
    """Where atelier keeps what it fetches (``$ATELIER_CACHE``, else ``~/.cache/atelier``)."""
    return Path(os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier").expanduser()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; directories can't be opened this way everywhere (Windows).
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    If the body raises, the temporary file is removed and the exception propagates unchanged, so the real
    name only ever holds a complete file. The temp name ends in ``.tmp``: writers must name the format
    explicitly (e.g. ``img.save(tmp, format="PNG")``). OS errors of the wrapper itself become AtelierError.
    """
    target = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise AtelierError(f"cannot write {target} ({e.strerror or e}); "
                           f"check that {target.parent} exists and is writable") from None
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(tmp, os.O_RDWR)  # the body may have replaced the file, so reopen by name
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            mode = target.stat().st_mode & 0o7777  # overwriting: keep the old file's permissions
        except OSError:
            mode = 0o666 & ~_UMASK
        with contextlib.suppress(OSError):  # some filesystems refuse chmod; the data matters more
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AtelierError(f"cannot write {target} ({e.strerror or e}); check free disk space and permissions") \
            from None
    _fsync_dir(target.parent)


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (weights identities, benchmark input hashes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (AtelierError on any OS error)."""
    target = Path(path)
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise AtelierError(f"cannot write {target} ({e.strerror or e}); check free disk space and permissions") \
            from None
    return target


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (AtelierError on any OS error)."""
    return atomic_write_bytes(path, text.encode(encoding))
