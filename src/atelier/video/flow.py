"""Optical flow, warping and occlusion, with OpenCV (``opencv-python-headless``).

Convention: ``flow(a, b)`` is ``[H, W, 2]`` (x, y) with ``a(p) ≈ b(p + flow(p))``: it points from each pixel of
``a`` to where that point is in ``b``. So ``warp(b, flow(a, b))`` is ``b`` brought into ``a``'s frame.

Occlusion (``consistent``): a pixel ``p`` of ``a`` is trusted when following the flow to ``b`` and back returns to
``p`` (Sundaram et al. 2010, as Ruder et al. 2016 use it for video style transfer):
``|f_ab(p) + f_ba(p + f_ab(p))|² ≤ 0.01 (|f_ab|² + |f_ba|²) + 0.5``, it lands inside ``b``, and it is not on a
motion boundary (``|∇f_ab|² ≤ 0.01 |f_ab|² + 0.002``), or it looks the same in both frames (photometric check,
for flat areas). Pixels that fail are uncovered or occluded between the frames.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from ..errors import AtelierError

FLOW_METHODS = ("dis", "farneback")
PHOTOMETRIC_TOLERANCE = 6.0  # grey levels: 3 to 10 gave the same warping error on the real clip (measured)


def _cv2():
    try:
        import cv2
    except ImportError:
        raise AtelierError("video needs PyAV and OpenCV: pip install 'atelier[video]'") from None
    return cv2


def gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` luma of an RGB uint8 or [0,1] float frame."""
    cv2 = _cv2()
    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class Flow:
    """Dense flow between two grey frames: DIS (Kroeger et al. 2016, OpenCV's fast default) or Farnebäck (2003).
    Frames larger than ``max_side`` on the long side are measured at that size and the flow scaled back up: DIS's
    medium preset costs 5 ms a call at 512x288 and 33 ms at 1024x576 on one core, and the stabiliser calls it
    twice a frame."""

    def __init__(self, method: str = "dis", max_side: int = 512):
        cv2 = _cv2()
        if method not in FLOW_METHODS:
            raise AtelierError(f"flow method must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
        self.method, self.max_side = method, max_side
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def _raw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        if self.method == "dis":
            return self._dis.calc(a, b, None)
        return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=5, winsize=21, iterations=5,
                                            poly_n=7, poly_sigma=1.5, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        cv2 = _cv2()
        h, w = a.shape[:2]
        scale = self.max_side / max(h, w) if self.max_side else 1.0
        if scale >= 1:
            return self._raw(a, b)
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        small = self._raw(cv2.resize(a, size, interpolation=cv2.INTER_AREA),
                          cv2.resize(b, size, interpolation=cv2.INTER_AREA))
        flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= w / size[0]
        flow[..., 1] *= h / size[1]
        return flow


@functools.lru_cache(maxsize=4)
def _grid(h: int, w: int) -> np.ndarray:
    """``[H, W, 2]`` float32 pixel coordinates (x, y)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.stack([gx, gy], -1)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``p + flow(p)`` (bilinear; edges repeated), float32."""
    cv2 = _cv2()
    h, w = flow.shape[:2]
    coords = _grid(h, w) + flow
    return cv2.remap(image.astype(np.float32, copy=False), coords, None, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _sq(v: np.ndarray) -> np.ndarray:
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]


def consistent(f_ab: np.ndarray, f_ba: np.ndarray, a: Optional[np.ndarray] = None, b: Optional[np.ndarray] = None,
               tolerance: float = PHOTOMETRIC_TOLERANCE) -> np.ndarray:
    """float32 ``[H, W]``: 1 where ``a``'s pixel is seen in ``b``, 0 where not. A pixel must land inside ``b`` and
    either pass the forward-backward check (not on a motion boundary) or, given the grey frames ``a`` and ``b``,
    look the same: ``b`` warped to ``a`` within ``tolerance`` grey levels (mean over 7x7). The photometric half
    rescues flat areas (a night sky), where the flow is ill-defined and fails the round trip but any flow warps
    them alike; without it Magenta's painted sky kept its full flicker (benchmarks/README.md section 13)."""
    cv2 = _cv2()
    h, w = f_ab.shape[:2]
    f_ab = f_ab.astype(np.float32, copy=False)
    back = warp(f_ba, f_ab)  # f_ba at p + f_ab(p)
    len_ab = _sq(f_ab)
    ok = _sq(f_ab + back) <= 0.01 * (len_ab + _sq(back)) + 0.5
    # central differences (np.gradient's, /2), both channels at once
    dx = cv2.Sobel(f_ab, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.Sobel(f_ab, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REPLICATE)
    ok &= _sq(dx) + _sq(dy) <= 0.01 * len_ab + 0.002
    if a is not None and b is not None:
        diff = cv2.blur(np.abs(a.astype(np.float32) - warp(b.astype(np.float32), f_ab)), (7, 7))
        ok |= diff < tolerance
    target = _grid(h, w) + f_ab
    ok &= (target[..., 0] >= 0) & (target[..., 0] <= w - 1) & (target[..., 1] >= 0) & (target[..., 1] <= h - 1)
    return ok.astype(np.float32)


def warping_error(current: np.ndarray, previous: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> float:
    """Lai et al. (2018): the mean over trusted pixels of ``||O_t − warp(O_{t−1})||²`` (RGB in [0,1], summed over
    channels). ``flow`` is ``flow(t, t−1)``, ``mask`` its consistency."""
    d = np.sum((current.astype(np.float32) - warp(previous, flow)) ** 2, axis=-1)
    m = mask.astype(np.float32)
    return float((d * m).sum() / max(m.sum(), 1.0))
