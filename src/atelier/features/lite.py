"""The lite encoder: a tiny VGG-shaped CNN (about 0.6 M parameters, about 1.2 MB in fp16) that ships inside the
package, so the optimisation engine runs the moment ``pip install`` finishes.

Contract: see ``base.py``. The encoder exposes VGG19's layer names at VGG19's resolutions (``conv1_1`` full size,
``conv2_1`` at 1/2, ``conv3_1`` at 1/4, ``conv4_1``/``conv4_2`` at 1/8, ``conv5_1`` at 1/16) so every option of the
gatys engine (layers, weights, pooling) means the same thing here, and so it can be distilled from VGG19 level by
level. It is narrow (16..256 channels against VGG's 64..512) and shallow (one or two convs per block against two or
four), which is where the speed comes from: most of VGG19's work is its full- and half-resolution 64/128-channel
convs.

Architecture arguments (stored in the model folder's ``config.json``, never taken from flags at load time):
``widths`` (channels of blocks 1..5) and ``convs`` (convs per block; block 4 needs two, for ``conv4_2``). Input
normalisation is ImageNet mean/std, like VGG19, so a distilled encoder sees what its teacher saw.

Where the weights come from (``load_lite``): ``None`` is the bundled model folder ``atelier/weights/lite``;
``"random"`` is a seeded He initialisation (untrained; outputs labelled random); anything else is a model folder
written by ``atelier train lite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import AtelierError
from .base import FeatureNet

KIND = "lite_encoder"
DEFAULT_ARCH: dict[str, Any] = {"widths": [16, 32, 64, 128, 256], "convs": [1, 1, 2, 2, 1]}
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "lite"
POOLINGS = ("max", "avg")


def check_arch(arch: dict[str, Any], where: str = "lite encoder") -> dict[str, Any]:
    """Return ``{"widths": [...], "convs": [...]}`` or raise AtelierError saying what is wrong."""
    widths, convs = arch.get("widths"), arch.get("convs")
    ok = (isinstance(widths, (list, tuple)) and isinstance(convs, (list, tuple)) and len(widths) == 5
          and len(convs) == 5 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                      for v in [*widths, *convs]))
    if not ok:
        raise AtelierError(f"{where}: architecture needs five positive whole 'widths' and five 'convs', got "
                           f"widths={widths!r} convs={convs!r}")
    if convs[3] < 2:
        raise AtelierError(f"{where}: block 4 needs at least two convs (conv4_2 is the content layer), got {convs[3]}")
    unknown = sorted(set(arch) - {"widths", "convs"})
    if unknown:
        raise AtelierError(f"{where}: unknown architecture argument(s) {', '.join(unknown)}")
    return {"widths": list(widths), "convs": list(convs)}


class LiteEncoder(FeatureNet):
    """Five blocks of 3x3 convs (zero padding) and ReLUs, 2x2 pooling between blocks, ImageNet normalisation."""

    default_content_layers = ("conv4_2",)
    default_style_layers = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128, 256), convs: Sequence[int] = (1, 1, 2, 2, 1),
                 pooling: str = "max", identity: str = "lite:untrained", random: bool = True):
        super().__init__(identity)
        self.arch = check_arch({"widths": list(widths), "convs": list(convs)})
        if pooling not in POOLINGS:
            raise AtelierError(f"unknown pooling {pooling!r}; choose from: {', '.join(POOLINGS)}")
        self.pooling = pooling
        self._random = random
        pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
        cin = 3
        for b, (width, n) in enumerate(zip(widths, convs), start=1):
            if b > 1:
                # ceil_mode: odd sizes keep their last row/column (the engine works at any size).
                self.layers[f"pool{b - 1}"] = pool(2, 2, ceil_mode=True)
            for i in range(1, n + 1):
                self.layers[f"conv{b}_{i}"] = nn.Conv2d(cin, width, 3, padding=1)
                self.layers[f"relu{b}_{i}"] = nn.ReLU(inplace=False)  # the engine keeps conv outputs
                cin = width
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def is_random(self) -> bool:
        return self._random

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def reset_parameters(self, seed: int) -> "LiteEncoder":
        """He init (normal, fan_out, relu) from a local generator: the weights depend on the seed alone."""
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / (m.out_channels * 9)) ** 0.5)
                    m.bias.zero_()
        return self

    def conv_names(self) -> list[str]:
        return [n for n in self.layer_names if n.startswith("conv")]


def build_lite(arch: Optional[dict[str, Any]] = None, pooling: str = "max", seed: int = 0) -> LiteEncoder:
    """A trainable (not frozen) encoder with seeded random weights: what the trainer starts from."""
    a = check_arch(dict(arch or DEFAULT_ARCH))
    return LiteEncoder(a["widths"], a["convs"], pooling, f"lite:random(seed={int(seed)})", True).reset_parameters(seed)


def encoder_state(module: LiteEncoder) -> dict[str, torch.Tensor]:
    """The encoder's weights with their model-folder keys (``conv1_1.weight`` ...)."""
    return {k.removeprefix("layers."): v for k, v in module.state_dict().items()}


def load_lite(weights: Optional[str] = None, pooling: str = "max", seed: int = 0,
              device: Union[torch.device, str, None] = None) -> LiteEncoder:
    """A frozen lite encoder: the bundled one (``weights=None``), seeded random ones, or a model folder."""
    from ..checkpoint import load_into, load_model_weights, read_model_config
    from ..images import sha256_file

    if weights is not None and str(weights).strip().lower() == "random":
        net = build_lite(pooling=pooling, seed=seed)
    else:
        folder = BUNDLED if weights is None else Path(weights).expanduser()
        if weights is None and not folder.is_dir():
            raise AtelierError(f"the bundled lite encoder is missing from {folder}; reinstall atelier, or pass "
                               "--lite-model MODEL_DIR (or random)")
        config = read_model_config(folder, kind=KIND)
        arch = check_arch(config["architecture"], where=str(folder))
        sd = load_model_weights(folder)
        name = "bundled" if folder.resolve() == BUNDLED else config.get("name") or folder.name
        digest = sha256_file(folder / "model.safetensors")[:12]
        net = LiteEncoder(arch["widths"], arch["convs"], pooling, f"lite:{name}(sha256:{digest})", False)
        load_into(net, {"layers." + k: v for k, v in sd.items()}, folder)
    net.freeze()
    return net.to(device) if device is not None else net


def find_lite_weights(weights: Optional[str] = None) -> tuple[Optional[str], str]:
    """(source, reason) for what ``load_lite`` would load; reads no weights. ``None`` source: nothing usable."""
    if weights is not None:
        if str(weights).strip().lower() == "random":
            return "random", "--lite-model random: seeded random encoder (untrained; outputs labelled random)"
        p = Path(weights).expanduser()
        return (str(p), f"lite encoder from {p}") if p.is_dir() else (None, f"lite model folder not found: {p}")
    if (BUNDLED / "model.safetensors").is_file():
        return str(BUNDLED), f"bundled lite encoder ({BUNDLED})"
    return None, f"the bundled lite encoder is missing from {BUNDLED}; reinstall atelier"
