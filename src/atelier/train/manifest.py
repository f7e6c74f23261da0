"""The pairs folder format (what ``atelier prepare`` writes and ``atelier train student`` reads).

A pairs folder (PAIRS_DIR)::

    prepare.json              the options and teacher identity of the run that made its first pair (later runs must
                              match); written together with that first pair, so a run that made none binds nothing
    content/<id>.png          the photograph, long side --size (exactly the pixels the teacher saw)
    stylized/<id>.png         the teacher's picture, the same size
    manifest.jsonl            one JSON line per finished pair (unsharded runs)
    manifest.<I>-of-<N>.jsonl the same for shard I of N (one file per writer process)
    .prepare.lock             taken while a run binds the folder (writes prepare.json with its first pair)

``id`` is the first 16 hex digits of sha256("<content sha256>:<style sha256>"), and with several style images each
photograph gets the style picked by sha256("<seed>:<content sha256>"), so the same inputs always give the same
folder, whatever the order, sharding or number of restarts.

Crash safety: both PNGs of a pair are written atomically (temporary name, fsync, rename) and only then is its
manifest line appended (one write, flush, fsync). A pair exists when its line does; on restart the ids in the
manifests (whose files exist) are skipped, a torn last line is cut off, and leftover files of unfinished pairs are
overwritten or removed, so a run killed at any moment and started again finishes without duplicates or half files.

Each shard appends to its own manifest file instead of all of them sharing one with O_APPEND: POSIX promises atomic
appends only for pipes (PIPE_BUF), not for regular files (and not at all over NFS), and with one writer per file a
torn tail can be cut off safely at restart. An advisory lock refuses a second process on the same shard.
``read_manifest`` merges every manifest file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..errors import AtelierError, OptionError
from ..files import atomic_write_text

PREPARE = "prepare.json"
MANIFEST = "manifest.jsonl"
LOCK = ".prepare.lock"
FORMAT = 1
# prepare.json keys that must match between runs into the same folder (the others may change: limit, shard, ...).
MUST_MATCH = ("teacher", "teacher_identity", "teacher_options", "size", "seed", "styles")


def manifest_name(index: int, count: int) -> str:
    return MANIFEST if count == 1 else f"manifest.{index}-of-{count}.jsonl"


def pair_id(content_sha: str, style_sha: str) -> str:
    return hashlib.sha256(f"{content_sha}:{style_sha}".encode()).hexdigest()[:16]


def pick_style(content_sha: str, count: int, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{content_sha}".encode()).hexdigest(), 16) % count


# ------------------------------------------------------------------------------------------------ reading


def manifest_files(d: Path) -> list[Path]:
    files = [d / MANIFEST] if (d / MANIFEST).is_file() else []
    return files + sorted(p for p in d.glob("manifest.*-of-*.jsonl") if p.is_file())


def _read_lines(path: Path) -> list[dict]:
    """Records of one manifest file; a torn last line (no newline, or not JSON) is ignored."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AtelierError(f"cannot read {path} ({e.strerror or e}); check its permissions") from None
    complete = data.split(b"\n")[:-1]  # what follows the last newline is a torn write (usually nothing)
    out = []
    for n, raw in enumerate(complete, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise ValueError
        except ValueError:
            if n == len(complete):
                continue  # a last line written only in part before a crash
            raise AtelierError(f"{path} line {n} is not a pair record; the manifest is damaged: remove that line "
                               "(the pair is redone by the next `atelier prepare`)") from None
        out.append(rec)
    return out


def merged(d: Path) -> dict[str, dict]:
    """id -> record over every manifest file (a pair redone later wins; its files are at the same paths)."""
    records: dict[str, dict] = {}
    for path in manifest_files(d):
        for rec in _read_lines(path):
            records[rec["id"]] = rec
    return records


def _file_ok(d: Path, rec: dict, key: str) -> bool:
    # Paths stay inside the folder (content/<id>.png, stylized/<id>.png): a manifest is data, not a pointer anywhere.
    v = rec.get(key)
    return isinstance(v, str) and v.startswith(f"{key}/") and ".." not in v and (d / v).is_file()


def files_exist(d: Path, rec: dict) -> bool:
    return _file_ok(d, rec, "content") and _file_ok(d, rec, "stylized")


def read_manifest(pairs_dir: Union[str, os.PathLike]) -> list[dict]:
    """Every finished pair of a pairs folder (all shards merged), sorted by id; each record as in the manifest
    (``content`` and ``stylized`` are paths relative to the folder). Raises a one-line ``AtelierError`` when the
    folder has no manifest, no pairs, or lists files that are missing."""
    d = Path(pairs_dir).expanduser()
    if not d.is_dir():
        raise AtelierError(f"pairs folder not found: {d}; make one with `atelier prepare`"
                           if not d.exists() else f"{d} is not a folder; pass a pairs folder from `atelier prepare`")
    if not manifest_files(d):
        raise AtelierError(f"{d} has no {MANIFEST}: it is not a pairs folder written by `atelier prepare` "
                           "(or its first pair has not finished yet)")
    records = merged(d)
    if not records:
        raise AtelierError(f"{d} has a manifest but no finished pairs yet; run `atelier prepare` into it")
    missing = [rec for rec in records.values() if not files_exist(d, rec)]
    if missing:
        rec = missing[0]
        gone = next(rec.get(k) for k in ("content", "stylized") if not _file_ok(d, rec, k))
        raise AtelierError(f"{d}: {len(missing)} of {len(records)} pairs in the manifest have missing files "
                           f"(e.g. {gone}); run the same `atelier prepare` again to redo them")
    return [records[k] for k in sorted(records)]


# ------------------------------------------------------------------------------------------------ writing


def cut_torn_tail(path: Path) -> int:
    """Truncate a manifest to its last complete, valid line (one writer per file, so this is safe); returns the
    number of bytes cut."""
    if not path.is_file():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep:  # the last complete line may itself be garbage if the disk lost the tail: drop it too
        start = data.rfind(b"\n", 0, keep - 1) + 1
        try:
            rec = json.loads(data[start:keep])
            if not isinstance(rec, dict) or "id" not in rec:
                raise ValueError
        except ValueError:
            keep = start
    if keep == len(data):
        return 0
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one process per shard is then up to the user
        return None
    return fcntl


@contextlib.contextmanager
def locked_append(path: Path) -> Iterator[Any]:
    """Open ``path`` for appending under an exclusive advisory lock (POSIX); a second writer is refused."""
    f = open(path, "ab")
    try:
        fcntl = _fcntl()
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise AtelierError(f"another `atelier prepare` is writing {path}; wait for it to finish, or give "
                                   "this one another shard") from None
        yield f
    finally:
        f.close()


def append(f: Any, record: dict) -> None:
    f.write((json.dumps(record, allow_nan=False) + "\n").encode())  # ensure_ascii: one line, whatever the names
    f.flush()
    os.fsync(f.fileno())


def ours(name: str) -> bool:
    """Names a pairs folder may hold before it is bound (other shards starting at the same time, a failed run)."""
    return (name in ("content", "stylized", MANIFEST, LOCK, PREPARE)
            or re.fullmatch(r"manifest\.\d+-of-\d+\.jsonl", name) is not None
            or (name.startswith(f".{PREPARE}.") and name.endswith(".tmp")))


def remove_strays(d: Path, keep: set[str], only: Optional[set[str]]) -> int:
    """Remove files (and temporaries) of pairs not in the manifests: of the ids in ``only``, or of any id."""
    removed = 0
    for sub in ("content", "stylized"):
        for p in (d / sub).iterdir():
            name = p.name
            pid = name.split(".")[1] if name.startswith(".") else name.split(".")[0]  # ".<id>.png.XXXX.tmp"
            temp = name.startswith(".") and name.endswith(".tmp")
            if (temp or pid not in keep) and (only is None or pid in only) and p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed += 1
    return removed


# ----------------------------------------------------------------------------------------- prepare.json


def bound(d: Path) -> bool:
    """Whether the folder's prepare.json binds later runs: it does once any pair was recorded. A prepare.json beside
    no pair (left by a run that failed before its first pair) binds nothing and is replaced by the next run's."""
    return (d / PREPARE).is_file() and bool(merged(d))


def check_settings(d: Path, now: dict[str, Any]) -> None:
    """Refuse (one line) when the folder's prepare.json differs from ``now`` in any ``MUST_MATCH`` key."""
    path = d / PREPARE
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise AtelierError(f"cannot read {path} ({e}); remove it only if the folder holds no pairs") from None

    def comparable(key: str, value: Any) -> Any:
        if key == "styles":  # the same style files may sit elsewhere now: compare their bytes
            return sorted(s.get("sha256") for s in value or [] if isinstance(s, dict))
        return json.loads(json.dumps(value))

    diff = [k for k in MUST_MATCH if comparable(k, saved.get(k)) != comparable(k, now.get(k))]
    if diff:
        def show(k: str, v: Any) -> str:
            return f"{len(v or [])} style image(s)" if k == "styles" else json.dumps(v)
        shown = "; ".join(f"{k} {show(k, saved.get(k))} -> {show(k, now.get(k))}" for k in diff)
        raise OptionError("out", f"{d} holds pairs made with other settings ({shown}); use the same options to "
                                 "continue it, or another out folder")


@contextlib.contextmanager
def binding(d: Path, settings: dict[str, Any]) -> Iterator[None]:
    """Around a run's first manifest line: under the folder's lock, check the settings against a prepare.json that
    binds (pairs exist), or write ours. Shards starting together serialise here, so the second one sees the first
    one's pair and compares, instead of both writing their own settings."""
    with open(d / LOCK, "ab") as lock:
        fcntl = _fcntl()
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # blocks briefly: only while another run binds
        if bound(d):
            check_settings(d, settings)
        else:
            atomic_write_text(d / PREPARE, json.dumps(settings, indent=2) + "\n")
        yield


__all__ = ["PREPARE", "MANIFEST", "FORMAT", "MUST_MATCH", "manifest_name", "pair_id", "pick_style", "read_manifest",
           "manifest_files", "merged", "files_exist", "cut_torn_tail", "locked_append", "append", "ours",
           "remove_strays", "bound", "check_settings", "binding"]
