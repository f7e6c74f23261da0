"""``atelier train lite``: train the lite encoder (``features/lite.py``) on the shared trainer.

Objectives:

* ``distill`` from ``--teacher-weights effnet`` (EfficientNet-Lite0 ImageNet): the student is the same net cut after
  block 11 with a narrower expansion (``--expand``, 2 against the teacher's 6), started from the teacher's own
  weights by keeping each block's most-used hidden channels (``features.effnet_copies.narrow``), then distilled on the
  levels the engine uses (effnet's default content and style levels) through 1x1 adapters as below.

* ``distill`` (after Collaborative Distillation, Wang et al. 2020): a 1x1 adapter per level maps the encoder's
  features to the teacher's channels; the loss is the relative squared error of the adapted features against the
  teacher's (VGG19's conv1_1, conv2_1, conv3_1, conv4_1, conv4_2, conv5_1, pre-ReLU, at the same resolutions) plus
  the relative error of their Gram matrices. Because the adapters are linear, an image whose encoder Grams match a
  style's also has (predicted) teacher Grams that match: what the optimisation engine relies on. Departure from the
  paper: no decoder and no collaborative reconstruction term; the engine never decodes.
* ``autoencoder`` (the user's first try, ORIGIN.md method 2): a mirrored decoder (nearest upsampling + 3x3 conv, no
  transposed convs) reconstructs the image from conv5_1 under a pixel L1 loss, plus a VICReg-style term on every
  level (each channel's standard deviation kept above 1, off-diagonal covariance pushed to 0) so no level
  collapses to a few channels. Only the encoder is shipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..options import LiteTrainOptions
from ..errors import AtelierError
from ..features.base import FeatureNet
from ..features.lite import EFFNET_TYPE, KIND, LiteEncoder, build_lite, encoder_state
from ..losses import content_loss, gram, style_loss
from .trainer import Task, model_card

LEVELS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")  # VGG-shaped encoders
EFFNET_BLOCKS = 12  # the effnet student ends where effnet's default levels end (b11_dw)


def effnet_levels() -> tuple[str, ...]:
    from ..features.effnet import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS

    return (*DEFAULT_STYLE_LAYERS, *DEFAULT_CONTENT_LAYERS)


class Distiller(nn.Module):
    """Encoder + one 1x1 adapter per level, mapping its channels to the teacher's."""

    def __init__(self, encoder: FeatureNet, teacher_channels: dict[str, int], levels: tuple[str, ...] = LEVELS):
        super().__init__()
        self.encoder, self.levels = encoder, levels
        with torch.no_grad():  # each level's width, from one tiny probe
            widths = {k: v.shape[1] for k, v in encoder(torch.zeros(1, 3, 32, 32), levels).items()}
        self.adapters = nn.ModuleDict({name: nn.Conv2d(widths[name], teacher_channels[name], 1) for name in levels})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x, self.levels)
        return {name: self.adapters[name](feats[name]) for name in self.levels}


class Autoencoder(nn.Module):
    """Encoder + a mirrored decoder from conv5_1 back to RGB."""

    def __init__(self, encoder: LiteEncoder):
        super().__init__()
        self.encoder = encoder
        widths = encoder.arch["widths"]
        blocks: list[nn.Module] = []
        for b in range(4, 0, -1):  # 1/16 -> full size: four upsamplings
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                       nn.Conv2d(widths[b], widths[b - 1], 3), nn.ReLU()]
        blocks += [nn.ReflectionPad2d(1), nn.Conv2d(widths[0], 3, 3)]
        self.decoder = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.encoder(x, LEVELS)
        return self.decoder(feats["conv5_1"]), feats


def variance_covariance(f: torch.Tensor) -> torch.Tensor:
    """VICReg's variance hinge (std >= 1 per channel) plus the mean squared off-diagonal covariance."""
    c = f.shape[1]
    x = f.transpose(0, 1).reshape(c, -1)
    x = x - x.mean(1, keepdim=True)
    std = (x.pow(2).mean(1) + 1e-4).sqrt()
    cov = x @ x.t() / x.shape[1]
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1 - std).mean() + off.pow(2).sum() / (c * max(1, c - 1))


def _feature_tile(f: torch.Tensor, size: int) -> torch.Tensor:
    """First three channels of ``f`` as an RGB picture, each scaled to [0,1] per image, upsampled to ``size``."""
    x = f[:, :3]
    if x.shape[1] < 3:
        x = x.repeat(1, 3, 1, 1)[:, :3]
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    return F.interpolate((x - lo) / (hi - lo + 1e-8), size=(size, size), mode="nearest")


class LiteTask(Task):
    name = "lite"
    kind = KIND
    options: LiteTrainOptions

    @property
    def effnet(self) -> bool:
        return self.options.teacher_weights.strip().lower() == "effnet"

    @property
    def levels(self) -> tuple[str, ...]:
        return effnet_levels() if self.effnet else LEVELS

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        o = self.options
        if self.effnet:
            if o.objective != "distill":
                raise AtelierError("--teacher-weights effnet works with --objective distill only")
            from ..features.effnet import load_effnet
            from ..features.effnet_copies import folded_state, from_folded, narrow

            self.teacher = load_effnet(device=device)
            state = {k: v.cpu() for k, v in folded_state(self.teacher).items()
                     if not k.startswith("blocks.") or int(k.split(".")[1]) < EFFNET_BLOCKS}
            encoder: FeatureNet = from_folded(narrow(state, "lite0", EFFNET_BLOCKS, o.expand), "lite0",
                                              EFFNET_BLOCKS, "lite:training", expand=o.expand)
        else:
            encoder = build_lite({"widths": list(o.widths), "convs": list(o.convs)}, seed=o.seed)
        torch.manual_seed(o.seed)  # the adapters' / decoder's default init
        if o.objective == "distill":
            if not self.effnet:
                self.teacher = self._teacher(device)
            probe = self.teacher(torch.zeros(1, 3, 32, 32, device=device), self.levels)
            model: nn.Module = Distiller(encoder, {k: v.shape[1] for k, v in probe.items()}, self.levels)
        else:
            self.teacher = None
            model = Autoencoder(encoder)
        return {"student": model.to(device)}

    def _teacher(self, device: torch.device):
        from ..features.vgg import find_vgg19_weights, load_vgg19

        w = self.options.teacher_weights
        if w.strip().lower() == "vgg19":
            found, reason = find_vgg19_weights()
            if found is None:
                raise AtelierError(f"--teacher-weights vgg19: {reason.split(':')[0]}; pass --teacher-weights PATH, "
                                   "or --teacher-weights random to distil a seeded random VGG19")
            w = found
        return load_vgg19(w, device=device)  # frozen; "random" gives seed 0

    def train_step(self, models, optimizers, batch, step) -> dict[str, float]:
        o = self.options
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        if o.objective == "distill":
            levels = self.levels
            with torch.no_grad():
                target = self.teacher(batch, levels)
            adapted = models["student"](batch)
            feat = sum(content_loss(adapted[k], target[k]) for k in levels) / len(levels)
            grams = sum(style_loss(adapted[k], gram(target[k])) for k in levels) / len(levels)
            loss = o.feature_weight * feat + o.gram_weight * grams
            parts = {"loss": float(loss.detach()), "feature": float(feat.detach()), "gram": float(grams.detach())}
        else:
            recon, feats = models["student"](batch)
            pixel = (recon - batch).abs().mean()
            spread = sum(variance_covariance(feats[k]) for k in LEVELS) / len(LEVELS)
            loss = pixel + o.variance_weight * spread
            parts = {"loss": float(loss.detach()), "pixel_l1": float(pixel.detach()), "spread": float(spread.detach())}
        loss.backward()
        opt.step()
        return parts

    def sample(self, modules, batch) -> torch.Tensor:
        size = batch.shape[-1]
        model = modules["student"]
        if self.options.objective == "distill":
            adapted = model(batch)
            target = self.teacher(batch, self.levels)
            shallow, content = self.levels[1], self.levels[-1]  # a fine style level and the content level
            cols = [batch, _feature_tile(target[shallow], size), _feature_tile(adapted[shallow], size),
                    _feature_tile(target[content], size), _feature_tile(adapted[content], size)]
        else:
            recon, _ = model(batch)
            cols = [batch, recon.clamp(0, 1)]
        rows = torch.cat(cols, dim=3)                          # each sample: its columns side by side
        return torch.cat(list(rows), dim=1).unsqueeze(0)       # samples stacked vertically

    def export(self, modules) -> tuple[dict[str, torch.Tensor], dict, dict]:
        encoder = modules["student"].encoder
        facts: dict[str, Any] = {"objective": self.options.objective}
        if self.options.objective == "distill":
            facts["teacher"] = self.teacher.identity
            facts["feature_weight"], facts["gram_weight"] = self.options.feature_weight, self.options.gram_weight
        else:
            facts["variance_weight"] = self.options.variance_weight
        params = sum(p.numel() for p in encoder.parameters())
        facts["parameters"] = params
        if self.effnet:
            from ..features.effnet_copies import folded_state

            facts["expand"] = self.options.expand
            return folded_state(encoder), {"type": EFFNET_TYPE, "variant": "lite0", "blocks": EFFNET_BLOCKS,
                                           "expand": self.options.expand}, facts
        return encoder_state(encoder), dict(encoder.arch), facts

    def card(self, facts: dict[str, Any]) -> str:
        data = facts["data"]
        teacher = f" from the teacher `{facts['teacher']}`" if facts.get("teacher") else ""
        return model_card(
            facts, f"Lite encoder `{facts['name']}`",
            f"A {facts['parameters']:,}-parameter feature net for atelier's optimisation engine (`--method lite "
            f"--lite-model THIS_FOLDER`), trained with the `{facts['objective']}` objective{teacher}.",
            [("data", f"{data['images']} images from {', '.join(data['folders'])} "
                      f"(skipped: {data['skipped'] or 'none'})")])

def train_lite(log=None, progress: bool = True, **options: Any):
    """Train a lite encoder (options: the fields of ``LiteTrainOptions``); returns the model folder."""
    from .trainer import train

    return train(LiteTask(LiteTrainOptions.from_kwargs(**options)), log=log, progress=progress)
