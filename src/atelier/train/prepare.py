"""``atelier prepare``: a teacher stylises a folder of photographs into (content, stylised) pairs for students.

The folder it writes, and why a killed run resumes cleanly, is described in ``manifest.py``. Here:

* ``plan``: the options checked against the disk (photographs, styles, the output folder, the teacher built, and the
  folder's prepare.json compared when it binds);
* ``_make_pairs``: the teacher loop, one pair at a time (the first new pair binds the folder: see
  ``manifest.binding``, so a run that fails before any pair leaves nothing that refuses the corrected rerun);
* ``_summary``: the counts, the log line and the returned dict.

Sharding (``--shard I/N``, and torchrun's RANK/WORLD_SIZE on top: shard I*world+rank of N*world) splits the
photographs in name order, every N-th from I; each shard appends to its own manifest file.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import torch

from .. import __version__
from ..errors import AtelierError, OptionError
from ..files import sha256_file
from ..images import IMAGE_EXTENSIONS, open_image, pil_to_tensor, resize_long_side, save_image, tensor_to_pil
from ..options import MIN_SIDE, PrepareOptions, parse_shard
from ..teachers import Teacher, make_teacher
from .manifest import (FORMAT, append, binding, bound, check_settings, cut_torn_tail, files_exist,
                       locked_append, manifest_name, merged, ours, pair_id, pick_style, remove_strays)

STYLE_CACHE_SIDE = 1024  # styles are kept in memory at most this long side (or 2 x --size), as uint8

# (photograph, content sha256 or None if unreadable, style index, pair id)
Entry = tuple[Path, Optional[str], Optional[int], Optional[str]]


def effective_shard(spec: str) -> tuple[int, int]:
    """--shard combined with torchrun's RANK/WORLD_SIZE: (I*world + rank, N*world)."""
    index, count = parse_shard(spec)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world < 1 or not 0 <= rank < world:
        raise AtelierError(f"RANK {rank} / WORLD_SIZE {world} from the environment make no sense; start with torchrun")
    return index * world + rank, count * world


# ---------------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """What one ``prepare`` call will do, checked before any teacher work."""

    options: PrepareOptions
    index: int
    count: int
    out: Path
    chosen: list[Path]                  # the photographs after --limit (all shards)
    todo: list[Path]                    # this shard's part of them
    other: list[Path]                   # files in --content that are not image files
    styles: list[tuple[Path, str]]      # (path, sha256)
    teacher: Teacher
    settings: dict[str, Any]            # what prepare.json records
    bound: bool                         # the folder's prepare.json binds this run (checked already)

    @property
    def manifest(self) -> Path:
        return self.out / manifest_name(self.index, self.count)


def _list_styles(spec: str) -> list[Path]:
    p = Path(spec).expanduser()
    if p.is_dir():
        found = sorted(e for e in p.iterdir() if e.is_file() and not e.name.startswith(".")
                       and e.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise OptionError("style", f"{spec}: no image files in that folder")
        return found
    if not p.exists():
        raise OptionError("style", f"{spec}: not found; pass a style image or a folder of them")
    return [p]


def _list_contents(spec: str) -> tuple[list[Path], list[Path]]:
    """(image files, other files) directly inside the content folder, sorted by name."""
    d = Path(spec).expanduser()
    if not d.is_dir():
        raise OptionError("content", f"{spec}: {'not a folder' if d.exists() else 'folder not found'}")
    images, other = [], []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (images if p.suffix.lower() in IMAGE_EXTENSIONS else other).append(p)
    return images, other


def _settings(o: PrepareOptions, teacher: Teacher, styles: list[tuple[Path, str]]) -> dict[str, Any]:
    return {"format": FORMAT, "atelier_version": __version__, "teacher": o.teacher,
            "teacher_identity": teacher.identity, "teacher_random_weights": teacher.random_weights,
            "teacher_options": teacher.options, "size": o.size, "seed": o.seed,
            "styles": [{"path": str(p), "sha256": sha} for p, sha in styles], "options": o.record()}


def _open_out(spec: str) -> tuple[Path, bool]:
    """The output folder, created if need be; (path, whether its prepare.json binds this run)."""
    out = Path(spec).expanduser()
    if out.exists() and not out.is_dir():
        raise OptionError("out", f"{out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError("out", f"{out} cannot be created ({e.strerror or e}); check the path and "
                                 "permissions") from None
    if bound(out):
        return out, True
    foreign = sorted(e.name for e in out.iterdir() if not ours(e.name))
    if foreign:
        raise OptionError("out", f"{out} already holds other files (e.g. {foreign[0]}) and is not a pairs folder; "
                                 "choose another folder")
    return out, False


def plan(o: PrepareOptions) -> Plan:
    """Check the options against the disk and build the teacher (loads its weights: missing ones fail here)."""
    index, count = effective_shard(o.shard)
    images, other = _list_contents(o.content)
    if not images:
        raise OptionError("content", f"{o.content} has no image files ({len(other)} other file(s)); pass a folder "
                                     "of photographs")
    styles = [(p, sha256_file(p)) for p in _list_styles(o.style)]
    teacher = make_teacher(o.teacher, o.teacher_options, device=o.device, seed=o.seed)
    settings = _settings(o, teacher, styles)
    out, is_bound = _open_out(o.out)
    if is_bound:
        check_settings(out, settings)  # before any teacher work
    for sub in ("content", "stylized"):
        (out / sub).mkdir(exist_ok=True)
    chosen = images[:o.limit] if o.limit else images
    return Plan(o, index, count, out, chosen, chosen[index::count], other, styles, teacher, settings, is_bound)


# ---------------------------------------------------------------------------------------------- the loop


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


@dataclass
class Tally:
    done: int = 0
    already: int = 0
    skipped: Counter = field(default_factory=Counter)
    example: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, p: Path) -> None:
        self.skipped[reason] += 1
        self.example.setdefault(reason, p.name)

    def why(self) -> str:
        return "; ".join(f"{n} {reason} (e.g. {self.example[reason]})"
                         for reason, n in sorted(self.skipped.items())) or "none"


def _entries(p: Plan) -> list[Entry]:
    """The ids of this run's photographs (None where a file cannot be read)."""
    entries: list[Entry] = []
    for path in p.todo:
        try:
            sha = sha256_file(path)
        except OSError:
            entries.append((path, None, None, None))
            continue
        s = pick_style(sha, len(p.styles), p.options.seed)
        entries.append((path, sha, s, pair_id(sha, p.styles[s][1])))
    return entries


def _resume(p: Plan, entries: list[Entry], say: Callable[[str], None]) -> set[str]:
    """Cut a torn manifest tail, clear leftovers of unfinished pairs; returns the ids already finished."""
    cut = cut_torn_tail(p.manifest)
    if cut:
        say(f"dropped an unfinished last line ({cut} bytes) from {p.manifest.name}")
    finished = {k for k, rec in merged(p.out).items() if files_exist(p.out, rec)}
    mine = {pid for *_, pid in entries if pid is not None}
    # Other shards may be writing their pairs right now: then touch only ours.
    remove_strays(p.out, keep=finished, only=(mine - finished) if p.count > 1 else None)
    return finished


def _make_pair(p: Plan, path: Path, sha: str, s: int, pid: str, style: torch.Tensor, f: BinaryIO) -> Optional[str]:
    """Stylise one photograph and record the pair; returns a skip reason, or None when the pair was written."""
    try:
        img = open_image(path)
    except AtelierError:
        return "unreadable or corrupt"
    if min(img.size) < MIN_SIDE:
        return f"smaller than {MIN_SIDE} px"
    o, teacher = p.options, p.teacher
    # Quantise to 8 bits first, so the stored content is exactly what the teacher saw.
    content = pil_to_tensor(tensor_to_pil(resize_long_side(pil_to_tensor(img), o.size)))
    stylized = teacher.stylize(content, style)
    h, w = int(content.shape[-2]), int(content.shape[-1])
    if tuple(stylized.shape) != (1, 3, h, w):
        raise RuntimeError(f"teacher {teacher.name} returned {tuple(stylized.shape)} for a {h}x{w} content image")
    record = {"id": pid, "content": f"content/{pid}.png", "stylized": f"stylized/{pid}.png",
              "source": str(path.resolve()), "content_sha256": sha,
              "style": str(p.styles[s][0].resolve()), "style_sha256": p.styles[s][1],
              "teacher": o.teacher, "teacher_identity": teacher.identity,
              "teacher_options": teacher.options, "seed": o.seed, "size": [h, w]}
    save_image(content, p.out / record["content"])
    save_image(stylized, p.out / record["stylized"], {"pair": record})
    if p.bound:
        append(f, record)
    else:  # this run's first pair: it binds the folder (writes prepare.json) as its line is appended
        with binding(p.out, p.settings):
            append(f, record)
        p.bound = True
    return None


def _make_pairs(p: Plan, entries: list[Entry], finished: set[str], f: BinaryIO, tally: Tally,
                progress: bool) -> None:
    bar = None
    if progress:
        from tqdm import tqdm

        before = len({pid for *_, pid in entries if pid in finished})  # shown as done, so the ETA is right
        bar = tqdm(total=len(p.todo), initial=before, desc="prepare", unit="pair", file=sys.stderr,
                   dynamic_ncols=True)
    bank = _StyleBank([path for path, _ in p.styles], p.options.size)
    seen: set[str] = set()
    try:
        for path, sha, s, pid in entries:
            if pid is not None and pid in finished and pid not in seen:
                tally.already += 1
                seen.add(pid)
                continue  # counted in the bar's initial value
            if pid is None:
                tally.skip("unreadable or corrupt", path)
            elif pid in seen:
                tally.skip("same bytes as another photograph", path)
            else:
                reason = _make_pair(p, path, sha, s, pid, bank[s], f)
                if reason is None:
                    tally.done += 1
                    seen.add(pid)
                else:
                    tally.skip(reason, path)
            if bar is not None:
                bar.update(1)
    except KeyboardInterrupt:
        raise AtelierError(f"interrupted after {tally.done} new pair(s); {p.out} keeps every finished pair: run the "
                           "same command again to continue") from None
    finally:
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------------------------------------ summary


def _summary(p: Plan, tally: Tally, seconds: float, say: Callable[[str], None]) -> dict[str, Any]:
    if p.todo and tally.done == 0 and tally.already == 0:
        shard = f" for shard {p.index}/{p.count}" if p.count > 1 else ""
        raise OptionError("content", f"{p.options.content}: no readable photographs among its {len(p.todo)} image "
                                     f"file(s){shard} (skipped: {tally.why()})")
    say(f"prepared {tally.done} new pair(s) in {seconds:.1f} s ({seconds / max(1, tally.done):.2f} s each), "
        f"{tally.already} from before; skipped: {tally.why()}; manifest {p.manifest}")
    return {"done": tally.done, "already": tally.already, "skipped": dict(tally.skipped), "total": len(p.todo),
            "seconds": round(seconds, 3), "seconds_per_pair": round(seconds / tally.done, 3) if tally.done else None,
            "teacher_identity": p.teacher.identity, "shard": f"{p.index}/{p.count}", "manifest": str(p.manifest),
            "out": str(p.out)}


def prepare(log: Optional[Callable[[str], None]] = None, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Make (content, stylised) pairs (options: the fields of ``PrepareOptions``); returns a summary:
    ``done`` (new pairs), ``already`` (pairs found from before), ``skipped`` (count by reason), ``total``, ``seconds``,
    ``seconds_per_pair``, ``teacher_identity``, ``shard``, ``manifest``, ``out``."""
    o = PrepareOptions.from_kwargs(**options)
    world, rank = int(os.environ.get("WORLD_SIZE", "1") or 1), int(os.environ.get("RANK", "0") or 0)
    say = (log if rank == 0 else None) or (lambda msg: None)
    if world > 1 and torch.cuda.is_available() and o.device in ("auto", "cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" is then this process's GPU
    p = plan(o)
    tally = Tally()
    if p.index == 0:  # counted once over all shards
        for path in p.other:
            tally.skip("not an image file name", path)
    t0 = time.perf_counter()
    with locked_append(p.manifest) as f:
        entries = _entries(p)
        finished = _resume(p, entries, say)
        say(f"prepare: {len(p.todo)} photograph(s)"
            + (f" (shard {p.index}/{p.count} of {len(p.chosen)})" if p.count > 1 else "")
            + f", {len(p.styles)} style(s), teacher {p.teacher.identity}, {o.size} px -> {p.out}"
            + (" [untrained random teacher weights: not a real style transfer]" if p.teacher.random_weights else ""))
        _make_pairs(p, entries, finished, f, tally, progress and rank == 0)
    return _summary(p, tally, time.perf_counter() - t0, say)


__all__ = ["prepare", "plan", "Plan", "effective_shard"]
