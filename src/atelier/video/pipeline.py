"""``stylize_video``: a video in, a stylised video out, frame by frame through any one-pass method, tied together
in time by a stabiliser (``temporal.py``), streamed (one frame in memory), in chunks that survive a kill.

The job folder ``OUT.parts/`` holds ``job.json`` (what is being made: input, method, styles, options) and the
finished chunks (``chunk-NNNNNN.mkv`` + ``.json``, lossless, at the working size). A rerun of the same command keeps
every finished chunk, restores the stabiliser from the last one (its last frame is read back exactly) and goes on;
a rerun with other settings is refused rather than mixing two jobs. When every chunk is done they are encoded into
``OUT`` (through a temporary name: ``io.assemble``) and the folder is removed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .. import __version__
from ..errors import AtelierError
from ..files import atomic_path, check_writable_parent
from . import io
from .flow import _cv2
from .temporal import TEMPORAL, make_stabilizer

DEFAULT_STABILITY = {"flow": 0.8, "average": 0.5, "none": 0.0}
DEFAULT_CHUNK = 48  # frames per chunk: about two seconds at 25 fps is what a kill can cost


class FramePainter:
    """A one-pass method, its options and its styles made ready once; ``__call__(rgb uint8) -> float32 [0,1]``."""

    def __init__(self, style: Union[None, Any, Sequence[Any]], method: Any = None, model: Any = None,
                 **options: Any):
        from ..api import find_method, prepare

        m = find_method(method, model)
        if m.kind == "optimisation":
            raise AtelierError(f"video takes one-pass methods (a student such as paintings or any-style, or magenta);"
                               f" {m.name} optimises each picture for seconds to minutes")
        self.method, self.opts, self.styles, self.given, _ = prepare(style, m, None, options)
        from ..devices import resolve_device

        self.device = resolve_device(self.opts.device)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255)
        painting = self.method.run(x, self.styles, self.opts, self.device)
        return painting.image[0].permute(1, 2, 0).float().cpu().numpy()


def resize_frame(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    cv2 = _cv2()
    if rgb.shape[:2] == (height, width):
        return rgb
    shrink = height * width < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def working_size(info: io.VideoInfo, size: Optional[int]) -> tuple[int, int]:
    """(height, width) the frames are painted at: the video's own, or ``size`` on the long side (even sides)."""
    if not size:
        return info.height, info.width
    s = size / max(info.height, info.width)
    return max(8, 2 * round(info.height * s / 2)), max(8, 2 * round(info.width * s / 2))


def _job(src: Path, info: io.VideoInfo, painter: FramePainter, style: Any, temporal: str, stability: float,
         flow: str, hw: tuple[int, int], chunk: int) -> dict[str, Any]:
    stat = src.stat()
    from ..api import style_list

    return {"input": str(src.resolve()), "input_bytes": stat.st_size, "input_mtime": int(stat.st_mtime),
            "method": painter.method.name, "styles": [str(s) for s in style_list(style)],
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in painter.given.items()},
            "temporal": temporal, "stability": stability, "flow": flow, "size": list(hw), "chunk_frames": chunk,
            "frames": info.frames}


def _open_job(parts: Path, job: dict[str, Any]) -> None:
    record = parts / "job.json"
    if record.exists():
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError):
            old = None
        if old != job:
            raise AtelierError(f"{parts} holds the chunks of another job (other input or settings); rerun the same "
                               "command to finish it, or remove that folder to start this one")
        return
    parts.mkdir(exist_ok=True)
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps(job, indent=1))


def stylize_video(src: Union[str, Path], dst: Union[str, Path], style: Any = None, method: Any = None, *,
                  model: Any = None, temporal: str = "flow", stability: Optional[float] = None, flow: str = "dis",
                  chunk_frames: int = DEFAULT_CHUNK, keep_parts: bool = False, progress: bool = False,
                  **options: Any) -> dict[str, Any]:
    """Stylise the video ``src`` into ``dst`` (.mp4, .mkv, .mov, .webm, .avi) with a one-pass method; returns a
    record of what was done (frames, seconds, frames per second, encoder, audio, chunks resumed).

    ``temporal``: ``flow`` (warp the previous output along the optical flow and blend it where the flow is trusted),
    ``average`` (the peer's moving average) or ``none``; ``stability`` in [0, 1): how much of the previous output
    each frame keeps (default: 0.8 for flow, 0.5 for average). ``options`` are ``StylizeOptions`` fields the
    method reads (``size``: the long side frames are painted at, default the video's own; the output keeps the
    video's size, frame rate, timing and audio).
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if temporal not in TEMPORAL:
        raise AtelierError(f"temporal must be one of {', '.join(TEMPORAL)}, got {temporal!r}")
    stability = DEFAULT_STABILITY[temporal] if stability is None else stability
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise AtelierError(f"chunk_frames must be a whole number of at least 1, got {chunk_frames!r}")
    info = io.probe(src)
    io.output_format(dst, info)  # a format this build cannot write, or timing it cannot keep: before any work
    check_writable_parent(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise AtelierError(f"{dst} is the input video; choose another output name so it is not overwritten")
    size = options.pop("size", None)
    hw = working_size(info, size)
    painter = FramePainter(style, method, model, **options)
    stabilizer = make_stabilizer(temporal, stability, flow)
    parts = dst.with_name(dst.name + ".parts")
    job = _job(src, info, painter, style, temporal, stability, flow, hw, chunk_frames)
    _open_job(parts, job)

    def chunk_path(k: int) -> Path:
        return parts / f"chunk-{k:06d}.mkv"

    done = 0
    while _finished(chunk_path(done)):
        done += 1
    resumed = done
    bar = _bar(progress, info.frames, "painting")
    index, written, paint_s = 0, 0, 0.0
    writer: Optional[io.ChunkWriter] = None
    skipped = done * chunk_frames
    last_photo = None
    try:
        for pts, rgb in io.frames(src, info):
            if index < skipped:
                if index == skipped - 1:
                    last_photo = resize_frame(rgb, *hw)
                index += 1
                if bar:
                    bar.update(1)
                continue
            if index == skipped and done:
                *_, (_, last_out) = io.read_chunk(chunk_path(done - 1))
                stabilizer.restore(last_photo, last_out)
            k = index // chunk_frames
            if writer is None:
                writer = io.ChunkWriter(chunk_path(k), hw[1], hw[0])
            photo = resize_frame(rgb, *hw)
            t1 = time.perf_counter()
            out = stabilizer(photo, painter(photo))
            paint_s += time.perf_counter() - t1
            writer.write(pts, out)
            written += 1
            index += 1
            if bar:
                bar.update(1)
            if index % chunk_frames == 0:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()
            writer = None
    except OSError as e:
        if writer is not None:
            writer.abort()
        full = io.disk_full(e, f"chunks in {parts}")
        if full:
            raise full from None
        raise
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if bar:
            bar.close()
    total_chunks = math.ceil(index / chunk_frames)
    if index == 0:
        raise AtelierError(f"{src}: no frame could be decoded")
    chunks = [chunk_path(k) for k in range(total_chunks)]
    t2 = time.perf_counter()
    enc_bar = _bar(progress, index, "encoding")
    try:
        encoded = io.assemble(chunks, info, dst, resize_frame,
                              progress=(lambda n: enc_bar.update(1)) if enc_bar else None)
    finally:
        if enc_bar:
            enc_bar.close()
    encode_s = time.perf_counter() - t2
    if not keep_parts:
        shutil.rmtree(parts, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {"input": str(src), "output": str(dst), "frames": index, "painted": written,
            "resumed_chunks": resumed, "chunks": total_chunks, "method": painter.method.name,
            "styles": job["styles"],
            "temporal": temporal, "stability": stability, "working_size": [hw[1], hw[0]],
            "video": {"size": [info.width, info.height], "rate": float(info.rate),
                      "variable_rate": info.variable_rate, "audio": info.audio},
            "encoder": encoded["encoder"], "audio": encoded["audio"], "seconds": round(seconds, 3),
            "paint_fps": round(written / paint_s, 2) if paint_s else None,
            "encode_seconds": round(encode_s, 3), "device": str(painter.device), "atelier_version": __version__}


def _finished(path: Path) -> bool:
    return path.exists() and io.chunk_record(path).exists()


def _bar(enabled: bool, total: int, what: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=what, file=sys.stderr, dynamic_ncols=True)
