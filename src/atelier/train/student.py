"""``atelier train student``: a pix2pix-style generator learns to make in one pass what a teacher made by optimisation.

On the shared trainer (``trainer.py``). Data: a pairs folder from ``atelier prepare`` (``pairs.read_manifest``);
the same random crop and flip are applied to the photo and the teacher's picture. Losses, as pix2pix (Isola et al.
2017) with the user's proposed additions:

* ``--l1-weight`` x L1 distance to the teacher's picture (pix2pix: 100);
* adversarial: a PatchGAN (``nets.discriminator``, ``--d-scales`` of them at halving resolutions, ``--d-base``
  channels) sees (photo, picture) pairs, and a conditional student's condition; ``bce`` is pix2pix's vanilla GAN
  loss, ``lsgan`` least squares (Mao et al. 2017: steadier on small data), ``hinge`` the hinge loss of SAGAN and
  BigGAN (Lim & Ye 2017), ``none`` turns it off;
* ``--perceptual-weight`` x (content + style distance to the teacher's picture) under the lite encoder's, EfficientNet
  -Lite0's or VGG19's features, the same relative losses the optimisation engine uses;
* ``--distill-weight`` x feature distillation: the relative squared distance between the student's and the teacher's
  picture at every level the perceptual loss reads, the shallow ones included. Unlike the Gram terms it says *where*
  each stroke goes, and unlike L1 its optimum is not the blurred mean of a textured target (Johnson et al. 2016's
  feature reconstruction, used here as dense supervision from the teacher's picture);
* ``--perceptual-scales N``: the perceptual and distillation terms again on the pictures average-pooled 2, 4, ...
  times (N scales in all), so strokes larger than the crop's receptive field are judged too.

Feature levels are computed once per step for all terms (and the style set's Gram loss against the painting). One
discriminator forward per step sees the real and fake pairs as one batch (DistributedDataParallel allows one
forward per backward). The exported weights are an exponential moving average of the generator's (``--ema``), which
is steadier than the last iterate. A few pairs are held out (``--holdout``): the model card reports PSNR/SSIM of the
student against the teacher on them.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..options import StudentTrainOptions
from ..errors import AtelierError
from ..images import load_image
from ..losses import content_loss, gram, style_loss
from ..nets import build_discriminator, build_generator, discriminator_arch, generator_arch
from .data import crop_batch
from .trainer import Task, model_card

KIND = "student"
PERCEPTUAL_STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1")
PERCEPTUAL_CONTENT = ("conv4_2",)
# The stability term's perturbation: a shift of up to 6 px (not a multiple of the 8 px cells of tiny-cond's body, whose
# output changes most under such shifts) and noise of about 2 grey levels, the size of a camera's frame-to-frame noise.
STABILITY_SHIFT = 6
STABILITY_NOISE = 0.008


class PairBank:
    """(photo, teacher picture) pairs in memory as uint8; both are resized together so the short side >= crop."""

    def __init__(self, pairs_dir: str, size: int, holdout: Optional[int], max_images: int = 0, log=None):
        """``holdout``: how many pairs (the first by id) to keep out of training; None: all of them (a folder of
        held-out pairs only)."""
        from .manifest import read_manifest

        self.root = Path(pairs_dir).expanduser()
        records = sorted(read_manifest(self.root), key=lambda r: r["id"])
        if holdout is None:
            holdout = len(records)
        elif len(records) <= holdout:
            raise AtelierError(f"{self.root} has {len(records)} pairs; training needs more than --holdout {holdout}")
        self.held, train = records[:holdout], records[holdout:]
        if max_images:
            train = train[:max_images]
        self.size = size
        self.pairs = [self._load(r) for r in train]
        self.skipped: dict = {}
        self.teacher = sorted({str(r.get("teacher_identity") or r.get("teacher")) for r in records})
        self.styles = sorted({Path(str(r.get("style", ""))).name for r in records})
        if log is not None:
            log(f"pairs: {len(self.pairs)} for training, {len(self.held)} held out, from {self.root}")

    def _load(self, record: dict, resize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        c = load_image(self.root / record["content"])
        t = load_image(self.root / record["stylized"])
        if c.shape != t.shape:
            raise AtelierError(f"{self.root}: pair {record['id']} has a photo of {tuple(c.shape[-2:])} and a picture "
                               f"of {tuple(t.shape[-2:])}; prepare the pairs again")
        h, w = c.shape[-2:]
        if resize and max(h, w) < self.size:
            # Upscaling a pair so its short side reaches the crop is fine; blowing a 64 px pair up to a 4096 px crop
            # is a mistake that would exhaust memory, so a crop past the pair's long side is refused.
            raise AtelierError(f"--size {self.size} is larger than pair {record['id']} ({w}x{h} px); use --size "
                               f"{max(16, max(h, w) // 16 * 16)} or less, or prepare the pairs at a larger --size")
        if resize and min(h, w) < self.size:
            scale = self.size / min(h, w)
            hw = (max(self.size, math.ceil(h * scale)), max(self.size, math.ceil(w * scale)))
            c = F.interpolate(c, size=hw, mode="bicubic", align_corners=False).clamp(0, 1)
            t = F.interpolate(t, size=hw, mode="bicubic", align_corners=False).clamp(0, 1)
        return (c[0] * 255).round().to(torch.uint8), (t[0] * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        """This process's slice of step ``step``'s global batch: (photos, pictures), float32 [b,3,size,size]."""
        return crop_batch(self.pairs, self.size, step, batch, seed, rank, world)

    def held_out(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [tuple(x.float().div(255).unsqueeze(0) for x in self._load(r, resize=False)) for r in self.held]


def fidelity(generator: nn.Module, held: list) -> dict[str, Any]:
    """Mean PSNR (and SSIM where scikit-image is installed) of the generator's pictures, as saved (8 bits), against
    the teacher's on held-out (photo, teacher picture, condition) triples; the condition is None for plain students."""
    from ..metrics import psnr

    if not held:
        return {}
    device = next(generator.parameters()).device
    ps, ss = [], []
    generator.eval()
    with torch.no_grad():
        for c, t, cond in held:
            out = generator(c.to(device)) if cond is None else generator(c.to(device), cond.to(device))
            out = (out.clamp(0, 1).cpu() * 255).round() / 255  # what a saved picture holds
            ps.append(float(psnr(out, t)))
            try:
                from ..metrics import ssim

                ss.append(float(ssim(out, t)))
            except (ImportError, ValueError):
                pass
    result: dict[str, Any] = {"pairs": len(held), "psnr_db": round(sum(ps) / len(ps), 3)}
    if ss:
        result["ssim"] = round(sum(ss) / len(ss), 4)
    return result


def gan_loss(kind: str, logits, real: bool) -> torch.Tensor:
    """The discriminator's loss on ``logits`` (a tensor, or a list of them from a multi-scale discriminator: the mean
    of the scales' losses) that should read ``real`` (True) or fake."""
    if isinstance(logits, (list, tuple)):
        return sum(gan_loss(kind, x, real) for x in logits) / len(logits)
    if kind == "hinge":
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits, target)  # lsgan


def generator_gan_loss(kind: str, logits) -> torch.Tensor:
    """The generator's adversarial loss: fool the discriminator (hinge: raise its logits, as in SAGAN)."""
    if isinstance(logits, (list, tuple)):
        return sum(generator_gan_loss(kind, x) for x in logits) / len(logits)
    return -logits.mean() if kind == "hinge" else gan_loss(kind, logits, True)


def _halves(logits):
    """(first half, second half) of a batch of logits, per scale for a multi-scale discriminator."""
    if isinstance(logits, (list, tuple)):
        pairs = [x.chunk(2) for x in logits]
        return [a for a, _ in pairs], [b for _, b in pairs]
    return logits.chunk(2)


class StudentTask(Task):
    name = "student"
    kind = KIND
    options: StudentTrainOptions

    def data(self, log):
        o = self.options
        self.bank = PairBank(o.pairs, o.size, o.holdout, o.max_images, log)
        return self.bank

    def data_facts(self, data: PairBank) -> dict[str, Any]:
        return {"pairs": str(data.root), "train_pairs": len(data), "held_out": len(data.held),
                "teacher": data.teacher, "styles": data.styles}

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        o = self.options
        torch.manual_seed(o.seed)
        g = self.make_generator().to(device)
        if o.init:
            self._init_from(g, o.init)
        modules: dict[str, nn.Module] = {"g": g}
        if o.gan_loss != "none":
            modules["d"] = build_discriminator({"in_channels": 6 + self.d_condition_channels(), "base": o.d_base,
                                                "scales": o.d_scales}).to(device)
        ema = copy.deepcopy(g).requires_grad_(False)
        modules["ema"] = ema
        self.perceptual = None
        if o.perceptual_weight > 0 or o.distill_weight > 0 or getattr(o, "style_weight", 0) > 0:
            if o.perceptual_net == "lite":
                from ..features.lite import load_lite

                self.perceptual = load_lite(device=device)
            elif o.perceptual_net == "effnet":
                from ..features.effnet import load_effnet

                self.perceptual = load_effnet(device=device)
            else:
                from ..features.vgg import find_vgg19_weights, load_vgg19

                found, reason = find_vgg19_weights()
                if found is None:
                    raise AtelierError(f"--perceptual-net vgg19: {reason.split(':')[0]}; use --perceptual-net lite")
                self.perceptual = load_vgg19(found, device=device)
        return modules

    def _init_from(self, g: nn.Module, folder: str) -> None:
        """The generator's starting weights from a model folder that was trained with the same architecture (and,
        for a conditional student, the same condition): anything else is refused in one line."""
        from ..folders import load_into, load_model_weights, read_model_config

        config = read_model_config(Path(folder).expanduser(), kind=KIND)
        built = {"generator": g.name, "args": generator_arch(g)}
        stored = config.get("architecture") or {}
        if stored.get("generator") != built["generator"] or {**built["args"], **(stored.get("args") or {})} \
                != built["args"]:
            raise AtelierError(f"--init {folder}: its architecture {stored} differs from this run's {built}; train "
                               "with the same generator options")
        mismatch = self.init_mismatch(config)
        if mismatch:
            raise AtelierError(f"--init {folder}: {mismatch}")
        load_into(g, load_model_weights(Path(folder).expanduser()), folder)

    def init_mismatch(self, config: dict[str, Any]) -> str:
        """Why a model folder cannot start this run (beyond its architecture), or "" (conditional tasks check the
        condition)."""
        return ""

    def optimizers(self, modules):
        o = self.options
        opts = {"g": torch.optim.Adam(modules["g"].parameters(), lr=o.learning_rate, betas=(o.beta1, 0.999))}
        if "d" in modules:
            opts["d"] = torch.optim.Adam(modules["d"].parameters(), lr=o.learning_rate, betas=(o.beta1, 0.999))
        return opts

    def perceptual_layers(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(content layers, style layers) of the perceptual net: VGG-shaped nets the four conv*_1 levels below
        conv5 and conv4_2; other nets (effnet) their own stylisation defaults."""
        names = self.perceptual.layer_names
        if all(n in names for n in PERCEPTUAL_STYLE + PERCEPTUAL_CONTENT):
            return PERCEPTUAL_CONTENT, PERCEPTUAL_STYLE
        return tuple(self.perceptual.default_content_layers), tuple(self.perceptual.default_style_layers)

    def feature_terms(self, fake: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                                             dict[str, torch.Tensor]]:
        """The unweighted feature losses against the teacher's picture (``perceptual``: content + Gram; ``distill``:
        every level's relative distance), averaged over ``--perceptual-scales``; and the fake's features at full
        scale, for terms a subclass adds."""
        o = self.options
        content, styles = self.perceptual_layers()
        levels = list(dict.fromkeys(content + styles))
        terms: dict[str, torch.Tensor] = {}
        full: dict[str, torch.Tensor] = {}
        scales = o.perceptual_scales if (o.perceptual_weight > 0 or o.distill_weight > 0) else 1
        for k in range(scales):
            f_in = fake if k == 0 else F.avg_pool2d(fake, 2 ** k)
            t_in = target if k == 0 else F.avg_pool2d(target, 2 ** k)
            f = self.perceptual(f_in, levels)
            if k == 0:
                full = f
            if not (o.perceptual_weight > 0 or o.distill_weight > 0):
                break  # only a subclass's terms (the style set's Gram loss against the painting) read features
            with torch.no_grad():
                t = self.perceptual(t_in, levels)
            if o.perceptual_weight > 0:
                perc = sum(content_loss(f[n], t[n]) for n in content) + \
                    sum(style_loss(f[n], gram(t[n])) for n in styles) / len(styles)
                terms["perceptual"] = terms.get("perceptual", 0) + perc / scales
            if o.distill_weight > 0:
                dist = sum(content_loss(f[n], t[n]) for n in levels) / len(levels)
                terms["distill"] = terms.get("distill", 0) + dist / scales
        return terms, full

    def d_condition_channels(self) -> int:
        """Channels the discriminator gets besides (photo, picture): a conditional student's condition."""
        return 0

    def d_input(self, content: torch.Tensor, picture: torch.Tensor, batch) -> torch.Tensor:
        """What the discriminator judges: the photo and a picture (and a conditional student's condition)."""
        return torch.cat([content, picture], 1)

    def make_generator(self) -> nn.Module:
        return build_generator(self.options.generator)

    def generate(self, g: nn.Module, batch) -> torch.Tensor:
        """The generator's picture for a batch (conditional tasks pass the condition too)."""
        return g(batch[0])

    def extra_losses(self, fake: torch.Tensor, batch, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted loss terms a subclass adds to the generator's (name -> weighted scalar); ``features`` holds the
        fake's perceptual features already computed this step (empty without a perceptual net)."""
        return {}

    def train_step(self, models, optimizers, batch, step) -> dict[str, float]:
        o = self.options
        content, target = batch[0], batch[1]
        g = models["g"]
        if o.stability_weight:  # the photo and its shifted, noised copy in one forward (DDP wants one per backward)
            moved, shift = self._perturbed(content, step)
            both = self.generate(g, (torch.cat([content, moved]), target,
                                     *[torch.cat([b, b]) if torch.is_tensor(b) else b for b in batch[2:]]))
            fake, fake_moved = both.chunk(2)
        else:
            fake = self.generate(g, batch)
        parts: dict[str, float] = {}
        if "d" in models:
            d = models["d"]
            optimizers["d"].zero_grad(set_to_none=True)
            # Real and fake pairs in one forward: DDP wants one forward per backward.
            both = torch.cat([self.d_input(content, target, batch), self.d_input(content, fake.detach(), batch)], 0)
            real, fake_logits = _halves(d(both))
            loss_d = 0.5 * (gan_loss(o.gan_loss, real, True) + gan_loss(o.gan_loss, fake_logits, False))
            loss_d.backward()
            optimizers["d"].step()
            parts["d"] = float(loss_d.detach())
        optimizers["g"].zero_grad(set_to_none=True)
        l1 = (fake - target).abs().mean()
        loss_g = o.l1_weight * l1
        parts["l1"] = float(l1.detach())
        if "d" in models:
            adv = generator_gan_loss(o.gan_loss, models["d"](self.d_input(content, fake, batch)))
            loss_g = loss_g + o.adv_weight * adv
            parts["adv"] = float(adv.detach())
        features: dict[str, torch.Tensor] = {}
        if self.perceptual is not None:
            terms, features = self.feature_terms(fake, target)
            weights = {"perceptual": o.perceptual_weight, "distill": o.distill_weight}
            for key, term in terms.items():
                loss_g = loss_g + weights[key] * term
                parts[key] = float(term.detach())
        for key, term in self.extra_losses(fake, batch, features).items():
            loss_g = loss_g + term
            parts[key] = float(term.detach())
        if o.stability_weight:
            m = STABILITY_SHIFT  # compare away from the borders the roll wrapped round
            stab = (fake_moved - torch.roll(fake, shift, dims=(2, 3)))[..., m:-m, m:-m].abs().mean()
            loss_g = loss_g + o.stability_weight * stab
            parts["stability"] = float(stab.detach())
        loss_g.backward()
        optimizers["g"].step()
        parts["loss"] = float(loss_g.detach())
        self._update_ema(models, step)
        return parts

    def _perturbed(self, content: torch.Tensor, step: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """The batch shifted by up to ``STABILITY_SHIFT`` px (the same shift for all, drawn from the step so a
        resumed run draws the same) with fresh sensor-like noise: what the next frame of a video looks like."""
        gen = torch.Generator().manual_seed(self.options.seed * 1_000_003 + step)
        dy, dx = (int(v) for v in torch.randint(-STABILITY_SHIFT, STABILITY_SHIFT + 1, (2,), generator=gen))
        noise = torch.randn(content.shape, generator=gen).to(content.device) * STABILITY_NOISE
        return (torch.roll(content, (dy, dx), dims=(2, 3)) + noise).clamp(0, 1), (dy, dx)

    def _update_ema(self, models, step: int) -> None:
        g = models["g"].module if hasattr(models["g"], "module") else models["g"]
        # Warm-up: a fixed 0.999 would keep 37% of the random initial weights after 1000 steps; (1+t)/(10+t) lets
        # the average follow the generator early on and reaches --ema later (a function of the step, so resumable).
        decay = min(self.options.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(models["ema"].parameters(), g.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            for e, b in zip(models["ema"].buffers(), g.buffers()):
                e.copy_(b)

    def sample(self, modules, batch) -> torch.Tensor:
        content, target = batch[0], batch[1]
        student = self.generate(modules["ema"], batch)
        rows = torch.cat([content, target, student.clamp(0, 1)], dim=3)  # photo | teacher | student (EMA)
        return torch.cat(list(rows), dim=1).unsqueeze(0)

    def export(self, modules) -> tuple[dict[str, torch.Tensor], dict, dict]:
        ema = modules["ema"]
        o = self.options
        facts: dict[str, Any] = {"generator": o.generator, "parameters": sum(p.numel() for p in ema.parameters()),
                                 "init": str(o.init) if o.init else None,
                                 "l1_weight": o.l1_weight, "gan_loss": o.gan_loss,
                                 "perceptual_weight": o.perceptual_weight, "perceptual_net": o.perceptual_net,
                                 "distill_weight": o.distill_weight, "perceptual_scales": o.perceptual_scales,
                                 "adv_weight": o.adv_weight,
                                 "style_weight": getattr(o, "style_weight", 0.0), "ema": o.ema,
                                 "stability_weight": o.stability_weight,
                                 "fidelity_held_out": self._fidelity(ema)}
        if "d" in modules:
            facts["discriminator"] = discriminator_arch(modules["d"])
        arch = {"generator": o.generator, "args": generator_arch(ema)}
        return {k: v for k, v in ema.state_dict().items()}, arch, facts

    def _fidelity(self, generator: nn.Module) -> dict[str, Any]:
        return fidelity(generator, [(c, t, None) for c, t in self.bank.held_out()])

    def config_extra(self, facts: dict[str, Any]) -> dict[str, Any]:
        styles = facts["data"].get("styles") or []
        return {"style": styles[0] if len(styles) == 1 else styles}

    def card(self, facts: dict[str, Any]) -> str:
        data, fid = facts["data"], facts.get("fidelity_held_out") or {}
        fidelity = (f"PSNR {fid['psnr_db']} dB" + (f", SSIM {fid['ssim']}" if "ssim" in fid else "") +
                    f" on {fid['pairs']} held-out pairs") if fid else "no held-out pairs"
        return model_card(
            facts, f"Student `{facts['name']}`",
            f"A `{facts['generator']}` generator ({facts['parameters']:,} parameters) that stylises in one forward pass "
            f"(`atelier stylize PHOTO --model THIS_FOLDER -o OUT`), trained pix2pix-style to imitate the teacher "
            f"`{', '.join(data['teacher'])}` (style: {', '.join(data['styles'])}).",
            [("data", f"{data['train_pairs']} pairs from {data['pairs']} ({data['held_out']} more held out)"),
             ("losses", f"{losses_text(facts)}; EMA {facts['ema']}")],
            after=(("fidelity to the teacher", fidelity),))

def losses_text(facts: dict[str, Any]) -> str:
    """The recipe for a card's losses line: every term that was on, with its weight."""
    parts = [f"L1 x {facts['l1_weight']}"]
    if facts.get("gan_loss", "none") != "none":
        d = facts.get("discriminator") or {}
        scales = d.get("scales", 1)
        parts.append(f"adversarial {facts['gan_loss']} x {facts.get('adv_weight', 1.0):g} (PatchGAN, base "
                     f"{d.get('base', 64)}" + (f", {scales} scales" if scales > 1 else "") + ")")
    else:
        parts.append("adversarial none")
    net, scales = facts.get("perceptual_net"), facts.get("perceptual_scales", 1)
    at = f" under {net}" + (f" at {scales} scales" if scales > 1 else "")
    if facts.get("perceptual_weight"):
        parts.append(f"perceptual x {facts['perceptual_weight']}{at}")
    if facts.get("distill_weight"):
        parts.append(f"feature distillation x {facts['distill_weight']}{at}")
    w = facts.get("stability_weight") or 0
    if w:
        parts.append(f"stability x {w:g} (a shifted, noised photo paints the shifted picture)")
    return ", ".join(parts)


def train_student(log=None, progress: bool = True, **options: Any):
    """Train a student (options: the fields of ``StudentTrainOptions``); returns the model folder."""
    from .trainer import train

    return train(StudentTask(StudentTrainOptions.from_kwargs(**options)), log=log, progress=progress)
