"""``atelier prepare``: a teacher stylises a folder of photographs into (content, stylised) pairs for students.

A pairs folder (PAIRS_DIR)::

    prepare.json              the options and teacher identity of the first run (later runs must match)
    content/<id>.png          the photograph, long side --size (exactly the pixels the teacher saw)
    stylized/<id>.png         the teacher's picture, the same size
    manifest.jsonl            one JSON line per finished pair (unsharded runs)
    manifest.<I>-of-<N>.jsonl the same for shard I of N (one file per writer process)

``id`` is the first 16 hex digits of sha256("<content sha256>:<style sha256>"), and with several style images each
photograph gets the style picked by sha256("<seed>:<content sha256>"), so the same inputs always give the same
folder, whatever the order, sharding or number of restarts.

Crash safety: both PNGs of a pair are written atomically (temporary name, fsync, rename) and only then is its
manifest line appended (one write, flush, fsync). A pair exists when its line does; on restart the ids in the
manifests (whose files exist) are skipped, a torn last line is cut off, and leftover files of unfinished pairs are
overwritten or removed, so a run killed at any moment and started again finishes without duplicates or half files.

Sharding (``--shard I/N``, and torchrun's RANK/WORLD_SIZE on top: shard I*world+rank of N*world) splits the
photographs in name order, every N-th from I. Each shard appends to its own manifest file instead of all of them
sharing one with O_APPEND: POSIX promises atomic appends only for pipes (PIPE_BUF), not for regular files (and not at
all over NFS), and with one writer per file a torn tail can be cut off safely at restart. An advisory lock refuses a
second process on the same shard. ``read_manifest`` merges every manifest file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from .. import __version__
from ..config import check_choices, check_known, check_whole, opt
from ..errors import AtelierError
from ..images import (IMAGE_EXTENSIONS, atomic_write_text, open_image, pil_to_tensor, resize_long_side, save_image,
                      sha256_file, tensor_to_pil)
from ..teachers import TEACHERS, Teacher, make_teacher

PREPARE = "prepare.json"
MANIFEST = "manifest.jsonl"
FORMAT = 1
MIN_SIDE = 16  # smaller photographs are skipped: the feature nets pool four times
STYLE_CACHE_SIDE = 1024  # styles are kept in memory at most this long side (or 2 x --size), as uint8
# prepare.json keys that must match between runs into the same folder (the others may change: limit, shard, ...).
MUST_MATCH = ("teacher", "teacher_identity", "teacher_options", "size", "seed", "styles")


@dataclass(frozen=True)
class PrepareOptions:
    content: Optional[str] = opt(None, "folder of content photographs, required (not searched recursively)",
                                 metavar="DIR")
    style: Optional[str] = opt(None, "a style image, or a folder of them (each photograph gets one, picked by a "
                               "hash of its bytes and --seed), required", metavar="IMAGE|DIR")
    teacher: str = opt("lite", "the model that stylises the photographs (magenta needs atelier[magenta])",
                       choices=TEACHERS)
    out: Optional[str] = opt(None, "pairs folder to write, required (run the same command again to continue an "
                             "interrupted run)", metavar="PAIRS_DIR")
    size: int = opt(256, "long side of the stored pairs in pixels")
    teacher_options: Union[str, dict, None] = opt(None, "teacher options as key=value pairs, e.g. "
                                                  "iterations=60,style_weight=20 (gatys/lite: the stylize options; "
                                                  "magenta: handle, style_size) (default: none)", metavar="K=V,...")
    limit: int = opt(0, "use at most this many photographs, the first in name order (0: all)")
    shard: str = opt("", "do only shard I of N (I/N, 0 <= I < N): every N-th photograph from the I-th; under "
                     "torchrun each process takes its part of it (default: all)", metavar="I/N")
    seed: int = opt(0, "random seed: which style each photograph gets (several styles) and the teacher's seed")
    device: str = opt("auto", "where the teacher computes (gatys, lite)", choices=("auto", "cpu", "cuda", "mps"))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "PrepareOptions":
        check_known(cls, kwargs, "prepare option")
        for name in ("content", "style", "out"):
            if kwargs.get(name) is not None:
                kwargs[name] = str(kwargs[name])
        kwargs["teacher_options"] = parse_teacher_options(kwargs.get("teacher_options"))
        if kwargs.get("shard") is None:
            kwargs.pop("shard", None)
        return cls(**kwargs).validate()

    def validate(self) -> "PrepareOptions":
        for name, what in (("content", "--content DIR is required (a folder of photographs)"),
                           ("style", "--style IMAGE|DIR is required (a style image or a folder of them)"),
                           ("out", "--out PAIRS_DIR is required (the pairs folder to write)")):
            if not getattr(self, name):
                raise AtelierError(what)
        check_whole(self, (("size", MIN_SIDE), ("limit", 0), ("seed", 0)))
        check_choices(self)
        if not isinstance(self.teacher_options, dict):
            raise AtelierError(f"--teacher-options must be key=value pairs, got {self.teacher_options!r}")
        parse_shard(self.shard)
        return self

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _scalar(text: str) -> Union[int, float, str]:
    for kind in (int, float):
        try:
            v = kind(text)
        except ValueError:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            break
        return v
    return text


def parse_teacher_options(value: Union[str, dict, None]) -> dict[str, Any]:
    """``"iterations=60,style_weight=20"`` -> ``{"iterations": 60, "style_weight": 20}`` (ints, floats, strings).

    A piece without ``=`` continues the previous value, so list values keep their commas:
    ``"scales=128,256,iterations=5"`` -> ``{"scales": "128,256", "iterations": 5}``.
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not k:
                raise AtelierError(f"--teacher-options names must be non-empty strings, got {k!r}")
            if isinstance(v, tuple):
                v = list(v)
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError):
                raise AtelierError(f"--teacher-options {k} must be a number, string or list, got {v!r}") from None
            out[k] = v
        return out
    if not isinstance(value, str):
        raise AtelierError(f"--teacher-options must be key=value pairs like iterations=60,style_weight=20, "
                           f"got {value!r}")
    pairs: list[list[str]] = []
    for piece in value.split(","):
        if "=" in piece:
            key, _, v = piece.partition("=")
            key = key.strip().replace("-", "_")
            if not key:
                raise AtelierError(f"--teacher-options: missing name before '=' in {value!r}")
            pairs.append([key, v.strip()])
        elif pairs:
            pairs[-1][1] += "," + piece.strip()
        elif piece.strip():
            raise AtelierError(f"--teacher-options must be key=value pairs like iterations=60,style_weight=20, "
                               f"got {value!r}")
    out: dict[str, Any] = {}
    for key, v in pairs:
        if key in out:
            raise AtelierError(f"--teacher-options gives {key} twice")
        out[key] = _scalar(v)
    return out


def parse_shard(spec: str) -> tuple[int, int]:
    """``""`` -> (0, 1); ``"I/N"`` -> (I, N) with 0 <= I < N."""
    if spec is None or str(spec).strip() == "":
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise AtelierError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def effective_shard(spec: str) -> tuple[int, int]:
    """--shard combined with torchrun's RANK/WORLD_SIZE: (I*world + rank, N*world)."""
    index, count = parse_shard(spec)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world < 1 or not 0 <= rank < world:
        raise AtelierError(f"RANK {rank} / WORLD_SIZE {world} from the environment make no sense; start with torchrun")
    return index * world + rank, count * world


def manifest_name(index: int, count: int) -> str:
    return MANIFEST if count == 1 else f"manifest.{index}-of-{count}.jsonl"


def pair_id(content_sha: str, style_sha: str) -> str:
    return hashlib.sha256(f"{content_sha}:{style_sha}".encode()).hexdigest()[:16]


def pick_style(content_sha: str, count: int, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{content_sha}".encode()).hexdigest(), 16) % count


# ------------------------------------------------------------------------------------------------ manifest


def _manifest_files(d: Path) -> list[Path]:
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


def _merged(d: Path) -> dict[str, dict]:
    """id -> record over every manifest file (a pair redone later wins; its files are at the same paths)."""
    records: dict[str, dict] = {}
    for path in _manifest_files(d):
        for rec in _read_lines(path):
            records[rec["id"]] = rec
    return records


def _file_ok(d: Path, rec: dict, key: str) -> bool:
    # Paths stay inside the folder (content/<id>.png, stylized/<id>.png): a manifest is data, not a pointer anywhere.
    v = rec.get(key)
    return isinstance(v, str) and v.startswith(f"{key}/") and ".." not in v and (d / v).is_file()


def _files_exist(d: Path, rec: dict) -> bool:
    return _file_ok(d, rec, "content") and _file_ok(d, rec, "stylized")


def read_manifest(pairs_dir: Union[str, os.PathLike]) -> list[dict]:
    """Every finished pair of a pairs folder (all shards merged), sorted by id; each record as in the manifest
    (``content`` and ``stylized`` are paths relative to the folder). Raises a one-line ``AtelierError`` when the
    folder has no manifest, no pairs, or lists files that are missing."""
    d = Path(pairs_dir).expanduser()
    if not d.is_dir():
        raise AtelierError(f"pairs folder not found: {d}; make one with `atelier prepare`"
                           if not d.exists() else f"{d} is not a folder; pass a pairs folder from `atelier prepare`")
    if not _manifest_files(d):
        raise AtelierError(f"{d} has no {MANIFEST}: it is not a pairs folder written by `atelier prepare` "
                           "(or its first pair has not finished yet)")
    records = _merged(d)
    if not records:
        raise AtelierError(f"{d} has a manifest but no finished pairs yet; run `atelier prepare` into it")
    missing = [rec for rec in records.values() if not _files_exist(d, rec)]
    if missing:
        rec = missing[0]
        gone = next(rec.get(k) for k in ("content", "stylized") if not _file_ok(d, rec, k))
        raise AtelierError(f"{d}: {len(missing)} of {len(records)} pairs in the manifest have missing files "
                           f"(e.g. {gone}); run the same `atelier prepare` again to redo them")
    return [records[k] for k in sorted(records)]


def _cut_torn_tail(path: Path) -> int:
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


@contextlib.contextmanager
def _locked_append(path: Path):
    """Open ``path`` for appending under an exclusive advisory lock (POSIX); a second writer is refused."""
    f = open(path, "ab")
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one process per shard is then up to the user
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise AtelierError(f"another `atelier prepare` is writing {path}; wait for it to finish, or give "
                                   "this one another --shard") from None
        yield f
    finally:
        f.close()


def _append(f, record: dict) -> None:
    f.write((json.dumps(record, allow_nan=False) + "\n").encode())  # ensure_ascii: one line, whatever the names
    f.flush()
    os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------------- prepare


def _settings(o: PrepareOptions, teacher: Teacher, styles: list[tuple[Path, str]]) -> dict[str, Any]:
    return {"format": FORMAT, "atelier_version": __version__, "teacher": o.teacher,
            "teacher_identity": teacher.identity, "teacher_random_weights": teacher.random_weights,
            "teacher_options": teacher.options, "size": o.size, "seed": o.seed,
            "styles": [{"path": str(p), "sha256": sha} for p, sha in styles], "options": o.record()}


def _check_settings(d: Path, now: dict[str, Any]) -> None:
    path = d / PREPARE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AtelierError(f"cannot read {path} ({e}); remove it only if the folder holds no pairs") from None

    def comparable(key: str, value: Any) -> Any:
        if key == "styles":  # the same style files may sit elsewhere now: compare their bytes
            return sorted(s.get("sha256") for s in value or [])
        return json.loads(json.dumps(value))

    diff = [k for k in MUST_MATCH if comparable(k, saved.get(k)) != comparable(k, now.get(k))]
    if diff:
        def show(k: str, v: Any) -> str:
            return f"{len(v or [])} style image(s)" if k == "styles" else json.dumps(v)
        shown = "; ".join(f"{k} {show(k, saved.get(k))} -> {show(k, now.get(k))}" for k in diff)
        raise AtelierError(f"{d} holds pairs made with other settings ({shown}); use the same options to continue "
                           "it, or another --out")


def _list_styles(spec: str) -> list[Path]:
    p = Path(spec).expanduser()
    if p.is_dir():
        found = sorted(e for e in p.iterdir() if e.is_file() and not e.name.startswith(".")
                       and e.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise AtelierError(f"--style {spec}: no image files in that folder")
        return found
    if not p.exists():
        raise AtelierError(f"--style {spec}: not found; pass a style image or a folder of them")
    return [p]


def _list_contents(spec: str) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly inside the content folder, sorted by name."""
    d = Path(spec).expanduser()
    if not d.is_dir():
        raise AtelierError(f"--content {spec}: {'not a folder' if d.exists() else 'folder not found'}")
    images, other = [], []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (images if p.suffix.lower() in IMAGE_EXTENSIONS else other).append(p)
    return images, other


def _ours(name: str) -> bool:
    """Names a pairs folder may hold before its prepare.json exists (other shards starting at the same time)."""
    return (name in ("content", "stylized", MANIFEST) or re.fullmatch(r"manifest\.\d+-of-\d+\.jsonl", name) is not None
            or (name.startswith(f".{PREPARE}.") and name.endswith(".tmp")))


def _remove_strays(d: Path, keep: set[str], only: Optional[set[str]]) -> int:
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


class _StyleBank:
    """Style pictures, decoded once each when first needed and kept as uint8 at a bounded size."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.cap = paths, max(STYLE_CACHE_SIDE, 2 * size)
        self.cache: dict[int, torch.Tensor] = {}

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            t = pil_to_tensor(open_image(self.paths[i]))
            if max(t.shape[-2:]) > self.cap:
                t = resize_long_side(t, self.cap)
            self.cache[i] = (t * 255).round().to(torch.uint8)
        return self.cache[i].float().div(255)


def prepare(log: Optional[Callable[[str], None]] = None, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Make (content, stylised) pairs (options: the fields of ``PrepareOptions``); returns a summary:
    ``done`` (new pairs), ``already`` (pairs found from before), ``skipped`` (count by reason), ``total``, ``seconds``,
    ``seconds_per_pair``, ``teacher_identity``, ``shard``, ``manifest``, ``out``."""
    o = PrepareOptions.from_kwargs(**options)
    index, count = effective_shard(o.shard)
    world, rank = int(os.environ.get("WORLD_SIZE", "1") or 1), int(os.environ.get("RANK", "0") or 0)
    say = (log if rank == 0 else None) or (lambda msg: None)
    progress = progress and rank == 0
    if world > 1 and torch.cuda.is_available() and o.device in ("auto", "cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is then this process's GPU

    images, other = _list_contents(o.content)
    if not images:
        raise AtelierError(f"no image files in --content {o.content} ({len(other)} other file(s)); pass a folder "
                           "of photographs")
    style_paths = _list_styles(o.style)
    styles = [(p, sha256_file(p)) for p in style_paths]
    teacher = make_teacher(o.teacher, o.teacher_options, device=o.device, seed=o.seed)
    settings = _settings(o, teacher, styles)

    out = Path(o.out).expanduser()
    if out.exists() and not out.is_dir():
        raise AtelierError(f"--out {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AtelierError(f"cannot create --out {out} ({e.strerror or e}); check the path and permissions") from None
    if not (out / PREPARE).is_file():
        foreign = sorted(e.name for e in out.iterdir() if not _ours(e.name))
        if foreign:
            raise AtelierError(f"--out {out} already holds other files (e.g. {foreign[0]}) and is not a pairs "
                               "folder; choose another folder")
        # Shards started together may all get here: each writes the same settings atomically, then all check.
        atomic_write_text(out / PREPARE, json.dumps(settings, indent=2) + "\n")
    _check_settings(out, settings)
    for sub in ("content", "stylized"):
        (out / sub).mkdir(exist_ok=True)

    skipped: Counter = Counter()
    example: dict[str, str] = {}

    def skip(reason: str, p: Path) -> None:
        skipped[reason] += 1
        example.setdefault(reason, p.name)

    if index == 0:  # counted once over all shards
        for p in other:
            skip("not an image file name", p)
    chosen = images[:o.limit] if o.limit else images
    plan = chosen[index::count]

    manifest = out / manifest_name(index, count)
    t0 = time.perf_counter()
    done = already = 0
    bar = None
    with _locked_append(manifest) as f:
        cut = _cut_torn_tail(manifest)
        if cut:
            say(f"dropped an unfinished last line ({cut} bytes) from {manifest.name}")
        # Ids of this run, and which of them are finished (in a manifest, with both files there).
        entries: list[tuple[Path, Optional[str], Optional[int], Optional[str]]] = []
        for p in plan:
            try:
                sha = sha256_file(p)
            except OSError:
                entries.append((p, None, None, None))
                continue
            s = pick_style(sha, len(styles), o.seed)
            entries.append((p, sha, s, pair_id(sha, styles[s][1])))
        records = _merged(out)
        finished = {k for k, rec in records.items() if _files_exist(out, rec)}
        mine = {pid for *_, pid in entries if pid is not None}
        only_mine = count > 1  # other shards may be writing their pairs right now: touch only ours
        _remove_strays(out, keep=finished, only=(mine - finished) if only_mine else None)
        say(f"prepare: {len(plan)} photograph(s)"
            + (f" (shard {index}/{count} of {len(chosen)})" if count > 1 else "")
            + f", {len(styles)} style(s), teacher {teacher.identity}, {o.size} px -> {out}"
            + (" [untrained random teacher weights: not a real style transfer]" if teacher.random_weights else ""))
        if progress:
            from tqdm import tqdm

            before = len({pid for *_, pid in entries if pid in finished})  # shown as done, so the ETA is right
            bar = tqdm(total=len(plan), initial=before, desc="prepare", unit="pair", file=sys.stderr,
                       dynamic_ncols=True)
        bank = _StyleBank([p for p, _ in styles], o.size)
        seen: set[str] = set()
        try:
            for p, sha, s, pid in entries:
                if pid is not None and pid in finished and pid not in seen:
                    already += 1
                    seen.add(pid)
                    continue  # counted in the bar's initial value
                if pid is None:
                    skip("unreadable or corrupt", p)
                elif pid in seen:
                    skip("same bytes as another photograph", p)
                else:
                    try:
                        img = open_image(p)
                    except AtelierError:
                        img = None
                    if img is None:
                        skip("unreadable or corrupt", p)
                    elif min(img.size) < MIN_SIDE:
                        skip(f"smaller than {MIN_SIDE} px", p)
                    else:
                        # Quantise to 8 bits first, so the stored content is exactly what the teacher saw.
                        content = pil_to_tensor(tensor_to_pil(resize_long_side(pil_to_tensor(img), o.size)))
                        stylized = teacher.stylize(content, bank[s])
                        h, w = int(content.shape[-2]), int(content.shape[-1])
                        if tuple(stylized.shape) != (1, 3, h, w):
                            raise RuntimeError(f"teacher {teacher.name} returned {tuple(stylized.shape)} for "
                                               f"a {h}x{w} content image")
                        record = {"id": pid, "content": f"content/{pid}.png", "stylized": f"stylized/{pid}.png",
                                  "source": str(p.resolve()), "content_sha256": sha,
                                  "style": str(styles[s][0].resolve()), "style_sha256": styles[s][1],
                                  "teacher": o.teacher, "teacher_identity": teacher.identity,
                                  "teacher_options": teacher.options, "seed": o.seed, "size": [h, w]}
                        save_image(content, out / record["content"])
                        save_image(stylized, out / record["stylized"], {"pair": record})
                        _append(f, record)
                        done += 1
                        seen.add(pid)
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt:
            raise AtelierError(f"interrupted after {done} new pair(s); {out} keeps every finished pair: run the "
                               "same command again to continue") from None
        finally:
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - t0
    why = "; ".join(f"{n} {reason} (e.g. {example[reason]})" for reason, n in sorted(skipped.items())) or "none"
    if plan and done == 0 and already == 0:
        raise AtelierError(f"no readable photographs among the {len(plan)} image file(s) of --content {o.content}"
                           f"{f' for shard {index}/{count}' if count > 1 else ''} (skipped: {why})")
    say(f"prepared {done} new pair(s) in {seconds:.1f} s ({seconds / max(1, done):.2f} s each), {already} from "
        f"before; skipped: {why}; manifest {manifest}")
    return {"done": done, "already": already, "skipped": dict(skipped), "total": len(plan),
            "seconds": round(seconds, 3), "seconds_per_pair": round(seconds / done, 3) if done else None,
            "teacher_identity": teacher.identity, "shard": f"{index}/{count}", "manifest": str(manifest),
            "out": str(out)}


__all__ = ["PrepareOptions", "prepare", "read_manifest", "parse_teacher_options", "parse_shard", "pair_id",
           "pick_style", "manifest_name", "effective_shard"]
