"""Where tiles go and how they blend: the one tiling plan shared by the torch path and the ONNX runtime.

numpy only (no torch), so ``atelier.runtime`` can use it where torch is not installed; ``methods/feedforward.py``
runs the same plan on tensors, so both paths cut and blend identically.

Contract:
- ``tile_starts(n, tile, overlap)``: tile starts along one axis: the first at 0, the last ending at ``n``, evenly
  spread, neighbours overlapping by at least ``overlap`` pixels; one tile (``[0]``) when ``n <= tile``.
- ``iter_tiles(h, w, tile, overlap)`` yields ``Tile(y, x, h, w, share)`` in raster order. A caller keeps one output
  buffer ``out`` (zeros) and, for each tile, runs the net on ``image[..., y:y+h, x:x+w]`` and does
  ``out[..., y:y+h, x:x+w] += share * (piece - out[..., y:y+h, x:x+w])``. That is an incremental weighted mean of the
  tiles, each weighted by a raised-cosine ramp across the bands it shares with its neighbours, so no seam shows;
  only the output image and tile-sized temporaries are ever allocated; and where all tiles agree (a pointwise net)
  ``piece - out`` is exactly 0, so the result equals the one-pass output bit for bit.
- ``check_tiling(tile, overlap, min_tile, net)``: the argument checks both paths make, as one-line AtelierErrors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import AtelierError

DEFAULT_OVERLAP = 32


def check_tiling(tile: Any, overlap: Any, min_tile: int, net: str) -> None:
    """Refuse tile arguments that cannot work; ``net`` names the network in messages (e.g. "tiny generator")."""
    for label, value in (("--tile", tile), ("the tile overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AtelierError(f"{label} must be a whole number of pixels >= 0, got {value!r}")
    if tile and tile <= overlap:
        raise AtelierError(f"--tile {tile} must be larger than the tile overlap ({overlap} px); use a larger "
                           "tile, or 0 for one pass")
    if tile and tile < min_tile:
        raise AtelierError(f"--tile {tile} is smaller than this {net}'s minimum input ({min_tile} px); use a larger "
                           "tile, or 0 for one pass")


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along an axis of ``n`` pixels: first at 0, last ending at ``n``, evenly spread, overlaps
    ``>= overlap``."""
    if n <= tile:
        return [0]
    count = -(-(n - tile) // (tile - overlap)) + 1
    span = n - tile
    return [(i * span + (count - 1) // 2) // (count - 1) for i in range(count)]


def ramp(length: int) -> np.ndarray:
    """Raised cosine rising over ``length`` pixels, sampled at pixel centres: strictly inside (0, 1), and
    ``ramp + ramp[::-1] == 1`` (two tiles crossing over an overlap band share each pixel's weight)."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / length
    return 0.5 - 0.5 * np.cos(math.pi * t)


def axis_weights(n: int, starts: list[int], tile: int) -> list[np.ndarray]:
    """One 1-D weight per tile along an axis: 1 inside, ramping down across each band shared with a neighbour."""
    size = min(tile, n)
    out = []
    for i, s in enumerate(starts):
        w = np.ones(size, dtype=np.float64)
        if i > 0:
            band = starts[i - 1] + size - s
            w[:band] *= ramp(band)
        if i + 1 < len(starts):
            band = s + size - starts[i + 1]
            w[size - band:] *= ramp(band)[::-1]
        out.append(w)
    return out


def cumulative(n: int, starts: list[int], weights: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """For each tile, the summed weight of the tiles before it over its own span; and the total over the axis."""
    total = np.zeros(n, dtype=np.float64)
    before = []
    for s, w in zip(starts, weights):
        before.append(total[s:s + w.size].copy())
        total[s:s + w.size] += w
    return before, total


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    h: int
    w: int
    share: np.ndarray  # float32 [h, w]: this tile's fraction of the weight placed so far (1 where it is first)


def iter_tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[Tile]:
    """The tiles of an ``h`` x ``w`` image in raster order, with their blending shares (see the module docstring)."""
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    wy, wx = axis_weights(h, ys, tile), axis_weights(w, xs, tile)
    # Tile (i, j) weighs wy[i] (x) wx[j]. In raster order the weight already placed at a pixel of tile (i, j) is
    # (rows before i, every column) + (row i, columns before j): separable, so it needs only 1-D arrays.
    before_y, _ = cumulative(h, ys, wy)
    before_x, total_x = cumulative(w, xs, wx)
    th, tw = min(tile, h), min(tile, w)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            mine = wy[i][:, None] * wx[j][None, :]
            placed = before_y[i][:, None] * total_x[x:x + tw][None, :] + wy[i][:, None] * before_x[j][None, :]
            yield Tile(y, x, th, tw, (mine / (placed + mine)).astype(np.float32))
