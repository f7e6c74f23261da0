"""Model folders: what a trained model ships as (resume checkpoints live in ``train/resume.py``).

A model folder is what a trained model ships as and what ``--model`` / ``--lite-model`` read::

    MODEL_DIR/config.json        kind, architecture arguments, format version, atelier version, training facts
    MODEL_DIR/model.safetensors  the weights (fp32, or fp16 for storage: callers compute in fp32)
    MODEL_DIR/MODEL_CARD.md      for people: data, steps, time, final losses, measured quality

Models are rebuilt from the stored config, never from command-line flags. Nothing is unpickled: weights are
safetensors. A folder is written next to its destination under a temporary name and renamed into place, so a
crash never leaves a half folder that looks whole. ``FolderCache`` keeps loaded models by folder and weights-file
stamp (students, style encoders).

"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import AtelierError

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "MODEL_CARD.md"

PathLike = Union[str, "os.PathLike[str]"]


def save_model_folder(folder: PathLike, state_dict: dict[str, torch.Tensor], config: dict[str, Any],
                      card: str = "", dtype: Optional[torch.dtype] = None) -> Path:
    """Write a model folder atomically. ``config`` needs at least ``kind`` and ``architecture`` (a dict)."""
    folder = Path(folder)
    if "kind" not in config or not isinstance(config.get("architecture"), dict):
        raise ValueError("a model config needs 'kind' and an 'architecture' dict")
    full = {"format_version": FORMAT_VERSION, "atelier_version": __version__, **config}
    if dtype is not None:
        full["storage_dtype"] = str(dtype).replace("torch.", "")
    tensors = {k: (v.detach().to("cpu", dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu())
               .contiguous().clone() for k, v in state_dict.items()}
    parent = folder.parent
    if not parent.is_dir():
        raise AtelierError(f"cannot write model folder {folder}: {parent} does not exist; create it first")
    if folder.exists() and not folder.is_dir():
        raise AtelierError(f"cannot write model folder {folder}: a file of that name exists")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise AtelierError(f"cannot write model folder {folder} ({e.strerror or e}); check permissions") from None
    try:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"kind": str(config["kind"])})
        (tmp / CONFIG_NAME).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_NAME).write_text(card if card.endswith("\n") or not card else card + "\n")
        # mkdtemp makes a private (0700) folder: give it the permissions a plain mkdir would have, so a model
        # folder written for others (a shared install, the bundled weights) stays readable by them.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for name in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME):
            os.chmod(tmp / name, 0o666 & ~umask)
        old = None
        if folder.exists():  # replace: move the old one aside first, so one of the two is always whole
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise AtelierError(f"cannot write model folder {folder} ({e.strerror or e}); "
                               "check free disk space and permissions") from None
        raise
    return folder


def read_model_config(folder: PathLike, kind: Optional[str] = None) -> dict[str, Any]:
    """Read and check ``config.json``; ``kind`` (if given) must match the folder's kind."""
    folder = Path(folder)
    if not folder.exists():
        raise AtelierError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise AtelierError(f"{folder} is not a model folder (expected a folder with {CONFIG_NAME} and "
                           f"{WEIGHTS_NAME})")
    path = folder / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise AtelierError(f"{folder} is not a model folder: {CONFIG_NAME} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AtelierError(f"{path} is unreadable or not JSON ({type(e).__name__}); the model folder is damaged") \
            from None
    if not isinstance(config, dict) or "kind" not in config or not isinstance(config.get("architecture"), dict):
        raise AtelierError(f"{path} lacks 'kind' or 'architecture'; the model folder is damaged")
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise AtelierError(f"{path} has no valid format_version; the model folder is damaged")
    if version > FORMAT_VERSION:
        raise AtelierError(f"{folder} uses model format {version}, newer than this atelier reads ({FORMAT_VERSION});"
                           f" upgrade atelier (pip install -U atelier)")
    if kind is not None and config["kind"] != kind:
        raise AtelierError(f"{folder} holds a {config['kind']!r} model, not a {kind!r} one")
    return config


class FolderCache:
    """Models loaded from folders, kept by (resolved folder, its weights file's modification time and size), the
    ``size`` most recent: a service or a batch loads each model once, and a folder rewritten in place is read again.
    Thread-safe; a folder whose weights cannot be stat'ed is loaded every time (its loader says what is wrong)."""

    def __init__(self, size: int):
        self.size = size
        self._items: "OrderedDict[tuple, Any]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, folder: Path, load: Callable[[Path], Any]) -> Any:
        try:
            st = (folder / WEIGHTS_NAME).stat()
            key: Optional[tuple] = (str(folder.resolve()), st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        with self._lock:
            if key is not None and key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = load(folder)
        if key is not None:
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return value


def load_model_weights(folder: PathLike) -> dict[str, torch.Tensor]:
    """The folder's weights as fp32 tensors (fp16 storage is widened: computation stays fp32)."""
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise AtelierError(f"{folder} is not a complete model folder: {WEIGHTS_NAME} is missing")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AtelierError(f"{path} is unreadable ({type(e).__name__}); the model folder is damaged") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: PathLike) -> torch.nn.Module:
    """``load_state_dict`` with a one-line error naming the first mismatching key."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:
        k = (missing or unexpected or wrong)[0]
        what = "missing" if missing else "unexpected" if unexpected else \
            f"shaped {tuple(state_dict[k].shape)}, expected {tuple(own[k].shape)}"
        raise AtelierError(f"{where} does not fit its stated architecture: weight {k!r} is {what}")
    for k, v in state_dict.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise AtelierError(f"{where} has non-finite values in {k!r}; the model is damaged")
    module.load_state_dict(state_dict)
    return module
