"""The style encoder: a small conv net that maps a style image to Magenta's 100-d style embedding in a few ms, where
Magenta's own style predictor (MobileNetV2, ``nets/magenta.py``) takes 17 ms or more (2 threads, 256x256:
benchmarks/README.md section 16). It is distilled from that predictor
(``atelier train style-encoder``, ``train/style_encoder.py``) and conditions the arbitrary-style students exactly as
the predictor's embedding does.

Why this shape: style is about feature statistics (Gatys et al.; Magenta's embedding is a linear map of a globally
average-pooled MobileNetV2 feature map). So the net is ``len(widths)`` levels of a stride-2 3x3 conv + ReLU (zero
padding), each halving the resolution; after the input and after every level the per-channel mean and standard
deviation over all pixels are pooled (no size-dependent layer, so any input size works: a global pool averages
whatever it gets), concatenated, normalised per sample (LayerNorm) and mapped by a two-layer MLP to the embedding.
The bundled encoder keeps its convs at their seeded random weights and learned only the LayerNorm and the head
(``train/style_encoder.py`` says why). Every level costs about the same (pixels x channels in x out are equal from
the second level on).

Contract:

- ``forward(x)``: input float32 ``[N,3,H,W]`` RGB in [0,1], ``H, W >= min_side`` (``2 ** len(widths)``: the last
  level keeps at least one pixel); the method feeds it the same 256x256 centre square the predictor sees
  (``methods.magenta.style_square``); output ``[N, dim]``. ``stats(x)`` is the trunk alone (``[N, features]``), and
  ``forward`` also takes those statistics in the place of pictures (training on a cache of them);
- ``check_style_input(x, min_side)`` refuses (one-line ``AtelierError``) what ``forward`` must not be given: not a
  4-d 3-channel float tensor, smaller than ``min_side``, NaN or infinite values (``LoadedStyleEncoder.encode`` checks
  then runs). ``forward`` itself has no checks, so ``torch.export`` traces it with dynamic batch, height and width;
- constructor arguments are plain ints (``arch``), checked, rebuilt from a model folder's config by
  ``build_style_encoder`` (the registry's ``style_encoder`` entries); weights N(0, He) from torch's global generator.

Model folders (``load_style_encoder``): ``config.json`` (kind ``style_encoder``, ``architecture`` ``{"encoder": NAME,
"args": {...}}``, ``embedding`` ``{"type": "magenta-embedding", "dim": 100, "teacher": <the predictor's identity>,
...}``, training facts) + ``model.safetensors`` (fp16 storage widened to fp32) + ``MODEL_CARD.md``. The bundled one
is ``atelier/weights/style-encoder``.

Imports nothing from atelier but ``errors``, the ground-floor ``registry`` and ``files``, and ``folders`` (model
folders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .. import registry
from ..errors import AtelierError
from ..files import sha256_file
from ..folders import WEIGHTS_NAME, FolderCache, load_into, load_model_weights, read_model_config

NAME = "stats-mlp"
KIND = "style_encoder"   # a model folder's kind
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "style-encoder"
EMBEDDING = 100          # Magenta's style embedding
STD_EPS = 1e-5           # inside the square root of the pooled variance: its gradient at a flat map stays finite
MAX_LEVELS, MAX_WIDTH, MAX_HIDDEN = 7, 1024, 4096

PathLike = Union[str, "os.PathLike[str]"]
_loaded = FolderCache(4)  # load_style_encoder's


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AtelierError(f"style encoder: {name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def pooled_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over all pixels of ``[N,C,H,W]``: two ``[N,C]``."""
    mean = h.mean((2, 3))
    var = (h - mean[..., None, None]).square().mean((2, 3))
    return mean, (var + STD_EPS).sqrt()


class StyleEncoder(nn.Module):
    """Stride-2 convs, mean and std pooled after each, LayerNorm, MLP to the embedding (see the module docstring)."""

    name = NAME

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128, 256), hidden: int = 256, dim: int = EMBEDDING):
        super().__init__()
        widths = list(widths)
        if not 1 <= len(widths) <= MAX_LEVELS:
            raise AtelierError(f"style encoder: widths takes 1 to {MAX_LEVELS} whole numbers, got {widths!r}")
        for w in widths:
            _whole("widths", w, 1, MAX_WIDTH)
        _whole("hidden", hidden, 1, MAX_HIDDEN)
        _whole("dim", dim, 1, MAX_HIDDEN)
        self.arch = {"widths": widths, "hidden": hidden, "dim": dim}
        self.min_side = 2 ** len(widths)
        cin, convs = 3, []
        for w in widths:
            convs.append(nn.Conv2d(cin, w, 3, stride=2, padding=1))
            cin = w
        self.convs = nn.ModuleList(convs)
        features = 2 * (3 + sum(widths))
        self.norm = nn.LayerNorm(features)
        self.head = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    @property
    def features(self) -> int:
        """How many pooled statistics ``stats`` gives per picture."""
        return self.norm.normalized_shape[0]

    def stats(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled statistics ``[N, features]`` of pictures ``[N,3,H,W]``: the trunk, no head."""
        h = (x - 0.5) * 4.0  # about unit spread for photographs and paintings alike
        stats = list(pooled_stats(x))
        for conv in self.convs:
            h = torch.relu(conv(h))
            stats += pooled_stats(h)
        return torch.cat(stats, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``[N, dim]`` of pictures ``[N,3,H,W]``, or of their pooled statistics ``[N, features]``
        (``stats``: training with a frozen trunk reads them from a cache)."""
        s = x if x.dim() == 2 else self.stats(x)
        return self.head(self.norm(s))


def check_style_input(x: Any, min_side: int, what: str = "the style image") -> torch.Tensor:
    """``x`` if it is what a style encoder takes (float ``[N,3,H,W]``, finite, ``H, W >= min_side``), else a
    one-line ``AtelierError`` saying what is wrong."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise AtelierError(f"a style encoder takes a float image tensor [N,3,H,W] in [0,1], got {shape}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) < min_side:
        raise AtelierError(f"{what} is {w}x{h} px; the style encoder needs at least {min_side} px on each side "
                           "(give a larger style image)")
    if not bool(torch.isfinite(x).all()):
        raise AtelierError(f"{what} holds NaN or infinite values; give finite pixels in [0,1]")
    return x


def build_style_encoder(name: str, arch: Optional[dict[str, Any]] = None) -> StyleEncoder:
    """A freshly initialised style encoder ``name`` (a registered one) from ``arch`` (missing keys: defaults)."""
    cls = registry.get("style_encoder", name).factory()  # unknown names: one line listing the registered ones
    arch = dict(arch or {})
    known = {"widths", "hidden", "dim"}
    unknown = sorted(set(arch) - known)
    if unknown:
        raise AtelierError(f"{name} style encoder: unknown argument(s) {', '.join(map(str, unknown))}; valid: "
                           f"{', '.join(sorted(known))}")
    if "widths" in arch and not isinstance(arch["widths"], (list, tuple)):
        raise AtelierError(f"{name} style encoder: widths must be a list of whole numbers, got {arch['widths']!r}")
    return cls(**arch)


# ------------------------------------------------------------------------------------------------ model folders


@dataclass
class LoadedStyleEncoder:
    """A style encoder model folder loaded for inference (eval mode, no gradients). ``predictor`` is the net under
    the name ``MagentaNets`` gives Magenta's style predictor, so ``methods.magenta.embed`` (and its embedding cache,
    keyed by ``identity``) serves both."""

    net: StyleEncoder
    identity: str           # style-encoder:<name>(sha256:<weights file>)
    teacher: str            # the identity of the Magenta predictor whose embedding it imitates
    folder: Path
    config: dict[str, Any]

    @property
    def predictor(self) -> StyleEncoder:
        return self.net

    @property
    def min_side(self) -> int:
        return self.net.min_side

    def encode(self, x: Any) -> torch.Tensor:
        """The embedding ``[N, dim]`` of pictures ``[N,3,H,W]`` in [0,1], refused in one line if they are not that
        (``check_style_input``)."""
        with torch.inference_mode():
            return self.net(check_style_input(x, self.min_side).to(torch.float32))


def load_style_encoder(folder: Optional[PathLike] = None) -> LoadedStyleEncoder:
    """The style encoder model folder ``folder`` (default: the bundled one, ``BUNDLED``), on the CPU; cached by the
    folder and its weights file's modification time and size. A missing or damaged folder: one-line errors."""
    return _loaded.get(Path(folder).expanduser() if folder is not None else BUNDLED, _read_folder)


def _read_folder(path: Path) -> LoadedStyleEncoder:
    config = read_model_config(path, KIND)  # missing folder, another kind, a newer format: one line
    arch, emb = config["architecture"], config.get("embedding")
    if not isinstance(emb, dict) or emb.get("dim") != EMBEDDING or not isinstance(emb.get("teacher"), str):
        raise AtelierError(f"{path / 'config.json'}: embedding must name its teacher and dim {EMBEDDING}; the model "
                           "folder is damaged")
    if not isinstance(arch.get("encoder"), str) or not isinstance(arch.get("args", {}), dict):
        raise AtelierError(f"{path / 'config.json'}: architecture needs an encoder name and args; the model folder "
                           "is damaged")
    try:
        net = build_style_encoder(arch["encoder"], arch.get("args", {}))
    except AtelierError as e:
        raise AtelierError(f"{path}: {e}") from None
    load_into(net, load_model_weights(path), path)
    try:
        digest = sha256_file(path / WEIGHTS_NAME)[:12]
    except OSError as e:
        raise AtelierError(f"cannot read {path / WEIGHTS_NAME} ({e.strerror or e})") from None
    name = config.get("name") if isinstance(config.get("name"), str) and config.get("name") else path.resolve().name
    return LoadedStyleEncoder(net.eval().requires_grad_(False), f"style-encoder:{name}(sha256:{digest})",
                              emb["teacher"], path, config)


__all__ = ["StyleEncoder", "LoadedStyleEncoder", "build_style_encoder", "check_style_input", "load_style_encoder",
           "pooled_stats", "NAME", "EMBEDDING", "KIND", "BUNDLED"]
