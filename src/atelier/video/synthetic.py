"""Clips with known motion, for the flicker benchmark and the tests.

``pan_zoom(photo, frames, ...)`` moves a virtual camera over a photo: each frame is the photo under an affine map
(a pan plus a slow zoom about the centre), so the true flow between any two frames is known exactly, and so is
which pixels come from outside the previous frame (the occluded ones). Sensor noise (a fresh draw every frame) is
what makes a frame-by-frame stylisation shimmer even where nothing moves.

``write_video(path, frames, rate, ...)`` encodes RGB frames (with a tone as audio if asked; with explicit
presentation times for a variable frame rate) so tests can make the inputs they need.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .flow import _cv2
from .io import _av


def _affine(t: float, w: int, h: int, pan: tuple[float, float], zoom: float) -> np.ndarray:
    """2x3 map from frame pixels to photo pixels at time ``t`` (frames)."""
    s = 1.0 / (1.0 + zoom * t)  # zooming in: the frame covers less of the photo as t grows
    cx, cy = w / 2 + pan[0] * t, h / 2 + pan[1] * t
    return np.array([[s, 0, cx - s * w / 2], [0, s, cy - s * h / 2]], dtype=np.float64)


def _inverse(a: np.ndarray) -> np.ndarray:
    m = np.vstack([a, [0, 0, 1]])
    return np.linalg.inv(m)[:2]


def pan_zoom(photo: np.ndarray, frames: int, size: tuple[int, int], pan: tuple[float, float] = (3.0, 1.0),
             zoom: float = 0.004, noise: float = 2.0, seed: int = 0
             ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(frames, flows, masks): ``frames`` RGB uint8 ``[h, w, 3]`` (``size`` = (w, h)), cut from ``photo`` (uint8,
    larger than ``size`` plus the motion); ``flows[t]`` is the true ``flow(t+1, t)`` and ``masks[t]`` 1 where that
    pixel of frame t+1 was inside frame t. ``pan`` in photo pixels per frame, ``zoom`` per frame, ``noise`` the
    standard deviation of the sensor noise in grey levels."""
    cv2 = _cv2()
    w, h = size
    ph, pw = photo.shape[:2]
    rng = np.random.default_rng(seed)
    # Start where the whole path stays inside the photo.
    x0, y0 = (pw - w - pan[0] * frames) / 2, (ph - h - pan[1] * frames) / 2
    if x0 < 0 or y0 < 0:
        raise ValueError(f"photo {pw}x{ph} is too small for a {w}x{h} frame panning {pan} over {frames} frames")
    shift = np.array([[0, 0, x0], [0, 0, y0]])
    maps = [_affine(t, w, h, pan, zoom) + shift for t in range(frames)]
    out = []
    for a in maps:
        f = cv2.warpAffine(photo, a, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
        if noise:
            f = np.clip(f.astype(np.float32) + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8)
        out.append(f)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([gx, gy, np.ones_like(gx)], -1)
    flows, masks = [], []
    for t in range(1, frames):
        q = pts @ maps[t].T                                       # photo point of each pixel of frame t
        p = np.concatenate([q, np.ones_like(gx)[..., None]], -1) @ _inverse(maps[t - 1]).T  # ... in frame t-1
        flow = (p - pts[..., :2]).astype(np.float32)
        inside = (p[..., 0] >= 0) & (p[..., 0] <= w - 1) & (p[..., 1] >= 0) & (p[..., 1] <= h - 1)
        flows.append(flow)
        masks.append(inside.astype(np.float32))
    return out, flows, masks


def write_video(path: Path, frames: Iterable[np.ndarray], rate: int = 25, *, codec: str = "libx264",
                pts: Optional[Sequence[int]] = None, time_base: Optional[Fraction] = None,
                audio_seconds: float = 0.0, audio_codec: str = "aac", container: Optional[str] = None) -> Path:
    """Encode RGB uint8 ``frames`` to ``path``. ``pts`` (in ``time_base``, default 1/rate) gives each frame's time
    (a variable frame rate); ``audio_seconds`` adds a 440 Hz tone of that length."""
    av = _av()
    tb = time_base or Fraction(1, rate)
    with av.open(str(path), "w", format=container) as c:
        vs = c.add_stream(codec, rate=rate)
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = tb
        a_s = None
        if audio_seconds:
            a_s = c.add_stream(audio_codec, rate=48000 if audio_codec != "mp2" else 44100)
            a_s.layout = "stereo"
        first = True
        for i, rgb in enumerate(frames):
            if first:
                vs.height, vs.width = rgb.shape[:2]
                first = False
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            f.pts, f.time_base = (pts[i] if pts is not None else i), tb
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        if a_s is not None:
            sr = a_s.codec_context.sample_rate
            n = a_s.codec_context.frame_size or 1024
            fmt = a_s.codec_context.format.name
            total = int(sr * audio_seconds)
            for start in range(0, total, n):
                t = (np.arange(start, min(start + n, total)) / sr).astype(np.float32)
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                data = np.stack([tone, tone])
                if fmt in ("s16", "s16p"):
                    data = (data * 32767).astype(np.int16)
                if not fmt.endswith("p"):  # packed: one row of interleaved samples
                    data = data.T.reshape(1, -1)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
                af.sample_rate, af.pts = sr, start
                for p in a_s.encode(af):
                    c.mux(p)
            for p in a_s.encode(None):
                c.mux(p)
    return path
