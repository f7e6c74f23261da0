"""Student inference: one forward pass of a trained feed-forward generator, whole or in overlapping tiles.

Contract of a student model folder (written by the trainer, read here; see ``atelier.checkpoint``)::

    config.json        {"kind": "student", "format_version": 1,
                        "architecture": {"generator": "<a registered generator>", "args": {...}},
                        "name": optional label, "style": optional label (e.g. the style image's file name),
                        "description": optional one line, "training": {...}}
    model.safetensors  the generator's state_dict (fp32, or fp16 widened to fp32 on load)

The generator is rebuilt from the stored config, never from flags, and runs in eval mode under
``torch.inference_mode``. A model is addressed by a folder path or by the name of a bundled folder under
``BUNDLED_DIR`` (``resolve_model``); a name is only ever looked up in that folder's listing, never joined into a path.

Tiling (``StudentModel.run(image, tile=T)``): the image is cut into tiles of at most T x T that overlap by at least
``overlap`` pixels, each tile runs on its own, and the tiles are blended with a raised-cosine ramp across each
overlap band, so no seam shows. The blend is an incremental weighted mean written into one output buffer
(``out += a * (tile - out)`` with ``a`` the tile's share of the weight so far), so only the output image and
tile-sized temporaries are ever allocated, and a purely pointwise net gives exactly the one-pass result. The plan
(starts, ramps, shares) lives in ``atelier.tiling`` (numpy only), which the torch-free ONNX runtime uses too.
Tiles are not free for nets with instance norms (every generator here): each tile normalises with its own
statistics, so a tiled result differs from the one-pass one by a few grey levels, more with small tiles.
"""

from __future__ import annotations

import copy
import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..folders import WEIGHTS_NAME, FolderCache, load_into, load_model_weights, read_model_config
from ..errors import AtelierError
from ..files import sha256_file
from .. import registry
from ..nets import build_generator
from ..options import StylizeOptions
from ..progress import Callback
from ..tiling import DEFAULT_OVERLAP, check_tiling, iter_tiles
from .base import COMMON_OPTIONS, ONE_PASS_OPTIONS, PIXEL_BLEND, STRENGTH_OPTIONS, Method, Painting, \
    blend_with_photo

KIND = "student"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"  # atelier/weights: shipped model folders

PathLike = Union[str, "os.PathLike[str]"]


# ------------------------------------------------------------------------------------------ finding models


def _student_config(folder: Path) -> Optional[dict[str, Any]]:
    """The folder's config if it is a readable student model folder, else None (for listings only)."""
    try:
        config = read_model_config(folder)
    except AtelierError:
        return None
    return config if config["kind"] == KIND else None


def _describe(name: str, config: dict[str, Any]) -> str:
    if isinstance(config.get("description"), str) and config["description"].strip():
        return " ".join(config["description"].split())
    arch = config.get("architecture", {})
    text = f"feed-forward student ({arch.get('generator', '?')} generator)"
    return text + (f" in the style of {config['style']}" if config.get("style") else "")


def _bundled() -> dict[str, Path]:
    """Name -> folder for every student model folder directly under ``BUNDLED_DIR`` (read at each call)."""
    root = Path(BUNDLED_DIR)
    if not root.is_dir():
        return {}
    found = {}
    for entry in sorted(root.iterdir()):
        # Hidden names are save_model_folder's temporary and replaced folders, never models.
        if not entry.name.startswith(".") and entry.is_dir() and _student_config(entry) is not None:
            found[entry.name] = entry
    return found


def list_students() -> list[dict[str, Any]]:
    """The bundled students: name, description, style label and folder."""
    out = []
    for name, folder in _bundled().items():
        config = _student_config(folder) or {}
        out.append({"name": name, "description": _describe(name, config), "style": config.get("style"),
                    "condition": condition_type(config), "folder": str(folder)})
    return out


def looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or (os.altsep is not None and os.altsep in text) \
        or text.startswith((".", "~"))


def resolve_model(name_or_path: PathLike) -> Path:
    """The model folder meant by a path, or by the name of a bundled student.

    Anything that looks like a path (a separator, a leading ``.`` or ``~``, or a ``Path`` object) is a path. A bare
    word is a bundled student's name if the listing has it, else a folder in the current directory if one exists.
    """
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path).expanduser()
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise AtelierError(f"a model is a model folder path or a bundled student's name, got {name_or_path!r}")
    text = name_or_path
    if looks_like_path(text):
        return Path(text).expanduser()
    bundled = _bundled()
    if text in bundled:
        return bundled[text]  # the listing's own path: the user's text is never joined into a path
    if Path(text).exists():
        return Path(text)
    names = ", ".join(bundled) or "none are installed"
    raise AtelierError(f"unknown model {text!r}: no such folder, and no bundled student has that name "
                       f"(bundled: {names}); give a student model folder path")


CONDITIONS = {"styles": "named", "magenta-embedding": "required"}  # condition type -> the method's style kind
MAGENTA_EMBEDDING = 100


def condition_type(config: dict[str, Any]) -> Optional[str]:
    c = config.get("condition")
    return c.get("type") if isinstance(c, dict) else None


def _check_condition(config: dict[str, Any], args: dict[str, Any], folder: Path) -> None:
    """A conditional student's config agrees with its generator (one line naming the damage otherwise)."""
    c = config.get("condition")
    if c is None:
        if "cond_dim" in args:
            raise AtelierError(f"{folder / 'config.json'}: a conditional generator without a condition; the model "
                               "folder is damaged")
        return
    kind = c.get("type") if isinstance(c, dict) else None
    if kind not in CONDITIONS or "cond_dim" not in args:
        raise AtelierError(f"{folder / 'config.json'}: unknown condition {kind!r} (known: {', '.join(CONDITIONS)}) "
                           "or a generator that takes none; upgrade atelier or fix the model folder")
    if kind == "styles":
        names = c.get("styles")
        if not (isinstance(names, list) and names and all(isinstance(n, str) and n for n in names)
                and len(set(names)) == len(names) and len(names) == args["cond_dim"]):
            raise AtelierError(f"{folder / 'config.json'}: condition.styles must name the {args['cond_dim']} styles, "
                               "once each; the model folder is damaged")
    elif args["cond_dim"] != MAGENTA_EMBEDDING:
        raise AtelierError(f"{folder / 'config.json'}: a magenta-embedding student takes {MAGENTA_EMBEDDING} "
                           f"numbers, its generator {args['cond_dim']}; the model folder is damaged")


# ------------------------------------------------------------------------------------------------- model


class StudentModel:
    """A loaded student: ``generator`` (eval mode, no gradients) plus where it came from."""

    def __init__(self, generator: torch.nn.Module, config: dict[str, Any], folder: Path, identity: str,
                 name: str):
        self.generator = generator.eval().requires_grad_(False)
        self.config = config
        self.folder = folder
        self.identity = identity
        self.name = name
        self._copies: dict[str, torch.nn.Module] = {}  # per other device: the CPU copy is never moved

    def __repr__(self) -> str:
        return f"StudentModel({self.identity}, folder={str(self.folder)!r})"

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())

    @property
    def style(self) -> Optional[str]:
        return self.config.get("style")

    @property
    def description(self) -> str:
        return _describe(self.name, self.config)

    @property
    def condition(self) -> Optional[str]:
        """None (one style, baked in), ``"styles"`` (a style set: named styles) or ``"magenta-embedding"``."""
        return condition_type(self.config)

    @property
    def style_names(self) -> list[str]:
        """The named styles of a style set (empty for other students)."""
        return list(self.config["condition"]["styles"]) if self.condition == "styles" else []

    def style_condition(self, names: Sequence[str], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
        """The condition ``[1, n]`` of a style set for ``names`` mixed by ``weights`` (equal by default)."""
        from .magenta import mix

        known = self.style_names
        hot = torch.eye(len(known))
        return mix([hot[known.index(self.find_style(n))].unsqueeze(0) for n in names], weights)

    def find_style(self, name: str) -> str:
        """The style set's name for ``name`` (exact, or ignoring case and ``-``/``_``/spaces), or a one-line error."""
        known = self.style_names
        if name in known:
            return name
        def key(text: str) -> str:
            return "".join(ch for ch in str(text).lower() if ch.isalnum())
        matches = [k for k in known if key(k) == key(name)]
        if len(matches) == 1:
            return matches[0]
        raise AtelierError(f"{self.name} has no style {name!r}; its styles: {', '.join(known)} (atelier styles)")

    @property
    def min_tile(self) -> int:
        """The smallest tile side the generator runs without padding it up (its ``min_size``)."""
        return int(getattr(self.generator, "min_size", 1))

    @classmethod
    def from_folder(cls, path: PathLike) -> "StudentModel":
        """Load a student model folder (a path, or a bundled name: see ``resolve_model``)."""
        folder = resolve_model(path)
        config = read_model_config(folder, KIND)  # missing folder, other kind, newer format: one-line errors
        arch = config["architecture"]
        gen = arch.get("generator")
        known = registry.names("generator")
        if not isinstance(gen, str):
            raise AtelierError(f"{folder / 'config.json'} has no architecture.generator naming the net (one of "
                               f"{', '.join(known)}); the model folder is damaged")
        if gen not in known:
            raise AtelierError(f"{folder / 'config.json'} names generator {gen!r}, which this atelier does not "
                               f"know (known: {', '.join(known)}); upgrade atelier or fix the model folder")
        args = arch.get("args", {})
        if not isinstance(args, dict):
            raise AtelierError(f"{folder / 'config.json'}: architecture.args must be a mapping; the model folder "
                               "is damaged")
        try:
            generator = build_generator(gen, args)
        except AtelierError as e:
            raise AtelierError(f"{folder}: {e}") from None
        _check_condition(config, args, folder)
        load_into(generator, load_model_weights(folder), folder)
        try:
            digest = sha256_file(folder / WEIGHTS_NAME)[:12]
        except OSError as e:
            raise AtelierError(f"cannot read {folder / WEIGHTS_NAME} ({e.strerror or e})") from None
        name = config.get("name") if isinstance(config.get("name"), str) and config.get("name") else \
            folder.resolve().name
        return cls(generator, config, folder, f"{KIND}:{name}(sha256:{digest})", name)

    def _net(self, device: torch.device) -> torch.nn.Module:
        if device.type == "cpu":
            return self.generator
        key = str(device)
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(self.generator).to(device)
        return self._copies[key]

    def run(self, image: torch.Tensor, tile: int = 0, overlap: int = DEFAULT_OVERLAP,
            device: Optional[Union[str, torch.device]] = None, cond: Optional[torch.Tensor] = None,
            strength: Optional[float] = None) -> torch.Tensor:
        """Stylise ``image`` (``[N,3,H,W]`` in [0,1]); returns the same shape on ``image``'s device.

        ``tile=0``: one pass. ``tile=T``: tiles of at most T x T overlapping by at least ``overlap`` pixels, blended
        (see the module docstring); peak memory is the output image plus one tile's activations. ``device``: where
        the net runs (default: the CPU); tiles travel there and back one at a time. ``cond`` (``[1, cond_dim]``) and
        ``strength`` (0 = the photo, 1 = the full style) are for conditional students (``condition``): every tile
        gets the same condition.
        """
        if self.condition is not None and cond is None:
            raise AtelierError(f"{self.name} is a conditional student: give it a style "
                               f"({'a style name' if self.condition == 'styles' else 'a style image'})")
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise AtelierError(f"a student takes an image tensor [N,3,H,W], got {shape}")
        check_tiling(tile, overlap, self.min_tile, f"{self.generator.name} generator")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        net = self._net(dev)
        if cond is not None:
            net = functools.partial(net, cond=cond.to(dev, torch.float32), strength=strength)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        with torch.inference_mode():
            if not tile or (h <= tile and w <= tile):
                return net(image.to(dev, torch.float32)).to(image.device)
            return self._tiled(net, image, tile, overlap, dev)

    @staticmethod
    def _tiled(net: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int, overlap: int,
               dev: torch.device) -> torch.Tensor:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        out = torch.zeros(image.shape[0], 3, h, w, dtype=torch.float32, device=image.device)
        for t in iter_tiles(h, w, tile, overlap):
            piece = net(image[..., t.y:t.y + t.h, t.x:t.x + t.w].to(dev, torch.float32)).to(image.device)
            region = out[..., t.y:t.y + t.h, t.x:t.x + t.w]
            # Incremental weighted mean: where every tile agrees (a pointwise net), piece - region is exactly 0.
            region.add_(torch.from_numpy(t.share).to(image.device) * (piece - region))
        return out


# ------------------------------------------------------------------------------------------ loading, cached

_models = FolderCache(4)


def load_student(name_or_path: Union[PathLike, StudentModel]) -> StudentModel:
    """A student model folder (a path, or a bundled student's name) loaded for inference.

    Cached by resolved folder and the weights file's modification time and size, so a service or a batch loads each
    model once, and a model folder rewritten in place is read again.
    """
    if isinstance(name_or_path, StudentModel):
        return name_or_path
    return _models.get(resolve_model(name_or_path), StudentModel.from_folder)


# ------------------------------------------------------------------------------------------ the method


class StudentMethod(Method):
    """A trained student as a method: one forward pass (or blended tiles), its style baked into its weights.

    Built from a folder (reading only its config until the first run) or from a loaded ``StudentModel``.
    ``strength``: a plain student's picture is blended with the photo in pixel space (``blend_with_photo``; 0 gives
    the photo exactly, without running the net); a conditional student blends inside its generator, in the same pass.
    """

    kind = KIND
    style = "baked"
    options = COMMON_OPTIONS | ONE_PASS_OPTIONS | STRENGTH_OPTIONS

    def __init__(self, folder: Union[PathLike, StudentModel]):
        self._model = folder if isinstance(folder, StudentModel) else None
        if self._model is not None:
            self.folder, self.label = self._model.folder, self._model.name
            config = self._model.config
        else:
            self.folder = resolve_model(folder)
            # Missing folder, another kind, a newer format or a damaged config: one line, before anything runs.
            config = read_model_config(self.folder, KIND)
            given = config.get("name")  # named as StudentModel.from_folder names it
            self.label = given if isinstance(given, str) and given else self.folder.resolve().name
        self.name = f"{KIND}:{self.label}"
        if self._model is None:  # a damaged condition: one line now, not a TypeError later
            args = config.get("architecture", {}).get("args") if isinstance(config.get("architecture"), dict) else {}
            _check_condition(config, args if isinstance(args, dict) else {}, self.folder)
        self.condition = condition_type(config)
        if self.condition is not None:
            # A conditional student: a style set takes style names, the arbitrary student style images; both blend
            # several (style_weights) and dial the style (strength: a blend with the photo in the same pass).
            self.style = CONDITIONS.get(self.condition, "required")
            self.options = COMMON_OPTIONS | ONE_PASS_OPTIONS | STRENGTH_OPTIONS | {"style_weights"}
            self.blends_styles = True
            self.style_names = list(config["condition"].get("styles") or []) if self.condition == "styles" else []
            if self.condition == "magenta-embedding":  # the style encoder, or Magenta's predictor and its weights
                self.options = self.options | {"magenta_weights", "style_encoder"}

    def style_side(self, options: StylizeOptions) -> Optional[int]:
        # The arbitrary student takes style images at their own size: methods.style_encoding checks the size the
        # user gave, then brings them to STYLE_LOAD_SIDE (512) and embeds their centre square at 256 px.
        return None if self.condition == "magenta-embedding" else 512

    def find_style(self, name: Any) -> str:
        """A style set's name for ``name`` (see ``StudentModel.find_style``); a path or image is refused."""
        if not isinstance(name, str):
            raise AtelierError(f"{self.label} takes style names, not images: {', '.join(self.style_names)}")
        return self.model.find_style(name)

    @property
    def description(self) -> str:  # type: ignore[override]
        config = _student_config(Path(self.folder))
        return _describe(self.label, config) if config is not None else f"student model folder {self.folder}"

    def availability(self) -> tuple[bool, str]:
        try:
            config = read_model_config(Path(self.folder), KIND)
        except AtelierError as e:
            return False, str(e)
        if self.condition == "magenta-embedding":
            from ..nets.magenta_port import find_magenta_weights
            from .style_encoding import default_encoder_fits

            if not default_encoder_fits(config):  # then it embeds with the predictor, as choose_embedder does
                source, reason = find_magenta_weights()  # the default source (--magenta-weights is checked at run)
                if source is None:
                    return False, f"its style embeddings need Magenta's style predictor: {reason}"
        return True, f"student model folder {self.folder}"

    @property
    def model(self) -> StudentModel:
        return self._model if self._model is not None else load_student(self.folder)

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor], options: StylizeOptions,
            device: torch.device, callback: Optional[Callback] = None) -> Painting:
        model = self.model
        t0 = time.perf_counter()
        cond, style, extra = None, model.style, {}
        if model.condition == "styles":
            names = [self.find_style(n) for n in styles]
            cond, style = model.style_condition(names, options.style_weights), names
        elif model.condition == "magenta-embedding":
            from . import style_encoding

            embedder = style_encoding.choose_embedder(model.config, options.style_encoder, options.magenta_weights)
            cond = style_encoding.embed_styles(embedder, styles, options.style_weights)
            style, extra = "style image embedding", {"style_encoder": style_encoding.identity(embedder)}
        if cond is not None:  # the generator blends with the photo itself, in the same pass
            image = model.run(content, tile=options.tile, device=device, cond=cond, strength=options.strength)
            applied = "in the generator: its picture blended with the photo in the same pass"
        else:
            image = content if options.strength <= 0 else model.run(content, tile=options.tile, device=device)
            image = blend_with_photo(image, content, options.strength)
            applied = PIXEL_BLEND
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        return Painting(image.detach().cpu(), seconds, metadata={
            "weights": model.identity, "random_weights": False, "style": style,
            "model_folder": str(model.folder), "tile": options.tile, "strength": options.strength,
            "strength_applied": applied, **extra})


def bundled_methods() -> dict[str, tuple[Callable[[], StudentMethod], str]]:
    """The registry's finder for bundled students: name -> (factory, description), read at each call."""
    return {name: (functools.partial(StudentMethod, folder), _describe(name, _student_config(folder) or {}))
            for name, folder in _bundled().items()}
