"""How each stylised frame is tied to the ones before it. Contract: a stabiliser is called once per frame in order
with the photo frame (RGB uint8 ``[H, W, 3]``, at the working size) and its stylised frame (float32 ``[H, W, 3]``
in [0,1]) and returns the frame to write (uint8). It remembers the last photo frame and the frame it *wrote* (not
its unrounded blend), so ``restore(photo, written)`` from a resumed job's last chunk puts it back exactly.

- ``none``: frame by frame (every frame painted on its own: the shimmer the issue trackers complain about).
- ``average``: a moving average, the peer's ``--smooth``: ``out = s·previous out + (1 − s)·stylised``. It cuts
  flicker where nothing moves and leaves ghost trails where things do.
- ``flow`` (ours): the previous output is warped to the current frame along the optical flow of the *photo* frames
  and blended in where the flow is trusted (forward-backward consistent, ``flow.consistent``):
  ``out = stylised + s·mask·(warped previous out − stylised)``. Along each motion path this is the same moving
  average, so strokes that should stay put stay put while things move (trusted: the flow's round trip holds, or
  the photo looks the same there, which rescues flat areas like a sky); uncovered and occluded pixels (mask 0) take
  the new frame as it is, so moving objects do not ghost. A frame where under a fifth of the pixels are trusted is a
  scene cut: it starts afresh.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import AtelierError
from .flow import Flow, _cv2, consistent, gray, warp

TEMPORAL = ("flow", "average", "none")
SCENE_CUT = 0.2  # below this trusted fraction, a frame starts afresh


class Stabilizer:
    name = "none"

    def __init__(self, stability: float = 0.0):
        if not 0 <= stability < 1:
            raise AtelierError(f"stability must be at least 0 and below 1, got {stability!r}")
        self.stability = float(stability)
        self.photo: Optional[np.ndarray] = None
        self.out: Optional[np.ndarray] = None
        self.trusted: list[float] = []   # per frame, the fraction of pixels blended (flow)

    def restore(self, photo: Optional[np.ndarray], written: Optional[np.ndarray]) -> None:
        """The last photo frame and the last frame written (uint8), as a resumed job finds them."""
        self.photo = photo
        self.out = None if written is None else written.astype(np.float32) / 255

    def __call__(self, photo: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        written = to_uint8(self.step(photo, stylised))
        self.photo, self.out = photo, written.astype(np.float32) / 255
        return written

    def step(self, photo: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        return stylised


class MovingAverage(Stabilizer):
    name = "average"

    def step(self, photo: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        if self.out is None or self.out.shape != stylised.shape:
            return stylised
        return self.stability * self.out + (1 - self.stability) * stylised


class FlowBlend(Stabilizer):
    name = "flow"

    def __init__(self, stability: float = 0.0, flow: str = "dis"):
        super().__init__(stability)
        self.flow = Flow(flow)
        self._gray: Optional[np.ndarray] = None

    def restore(self, photo: Optional[np.ndarray], written: Optional[np.ndarray]) -> None:
        super().restore(photo, written)
        self._gray = None if photo is None else gray(photo)

    def step(self, photo: np.ndarray, stylised: np.ndarray) -> np.ndarray:
        g = gray(photo)
        prev_gray, self._gray = self._gray, g
        if self.out is None or prev_gray is None or prev_gray.shape != g.shape or self.stability == 0:
            return stylised
        back = self.flow(g, prev_gray)         # current -> previous
        fwd = self.flow(prev_gray, g)          # previous -> current
        mask = consistent(back, fwd, g, prev_gray)
        self.trusted.append(float(mask.mean()))
        if mask.mean() < SCENE_CUT:
            return stylised
        mask = _cv2().GaussianBlur(mask, (5, 5), 1.0)[..., None]  # soft seams between blended and fresh pixels
        return stylised + self.stability * mask * (warp(self.out, back) - stylised)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A [0,1] float frame as the uint8 frame that is written (rounded)."""
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_stabilizer(temporal: str, stability: float, flow: str = "dis") -> Stabilizer:
    if temporal not in TEMPORAL:
        raise AtelierError(f"temporal must be one of {', '.join(TEMPORAL)}, got {temporal!r}")
    if temporal == "flow":
        return FlowBlend(stability, flow)
    if temporal == "average":
        return MovingAverage(stability)
    return Stabilizer(0.0)
