"""Training images: read once into memory, then random crops and flips drawn from a per-step generator.

Why in memory: the training sets here are a few hundred photographs of about 0.15 MP, which fit in a few hundred MB as
uint8 at training resolution, and a 2-core machine cannot spare cores for decoding JPEGs every step.

Why a per-step generator: the images and crops of step ``s`` depend only on ``(seed, s)``, so a resumed run sees
exactly the batches an uninterrupted one would, with no data-loader state to save; and under torchrun every process
draws the same global batch and takes its own slice of it, so one process with batch B and N processes with B/N
each train on the same images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..errors import AtelierError
from ..images import IMAGE_EXTENSIONS, open_image, pil_to_tensor

# Stored images keep their short side at most this multiple of the crop size: crops then cover a good part of
# the picture (the style statistics of a whole painting, not one brush stroke) while memory stays small.
KEEP_SCALE = 1.5


class ImageBank:
    """All readable images of some folders, resized so the short side is between ``size`` and 1.5 x ``size``."""

    def __init__(self, folders: Sequence[str], size: int, max_images: int = 0,
                 log: Optional[Callable[[str], None]] = None):
        self.size = size
        paths: list[Path] = []
        skipped: Counter = Counter()
        example: dict[str, str] = {}  # one file name per reason, for the message

        def skip(reason: str, p: Path) -> None:
            skipped[reason] += 1
            example.setdefault(reason, p.name)
        for folder in folders:
            d = Path(folder).expanduser()
            if not d.is_dir():
                raise AtelierError(f"--images {folder}: {'not a folder' if d.exists() else 'folder not found'}")
            for p in sorted(d.iterdir()):
                if p.name.startswith(".") or not p.is_file():
                    continue
                if p.suffix.lower() not in IMAGE_EXTENSIONS:
                    skip("not an image file name", p)
                    continue
                paths.append(p)
        if max_images:
            paths = paths[:max_images]
        self.images: list[torch.Tensor] = []  # uint8 [3,H,W]
        self.names: list[str] = []
        for p in paths:
            try:
                img = open_image(p)
            except AtelierError:
                skip("unreadable or corrupt", p)
                continue
            w, h = img.size
            if min(w, h) < 16:
                skip("smaller than 16 px", p)
                continue
            short = min(w, h)
            target = min(max(short, size), round(size * KEEP_SCALE))
            if target != short:
                scale = target / short
                img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample=3)  # bicubic
            self.images.append((pil_to_tensor(img)[0] * 255).round().to(torch.uint8))
            self.names.append(str(p))
        self.skipped = dict(skipped)
        why = "; ".join(f"{n} {reason} (e.g. {example[reason]})" for reason, n in sorted(skipped.items())) or "none"
        if not self.images:
            raise AtelierError(f"no readable training images in {', '.join(map(str, folders))} "
                               f"(skipped: {why})")
        if log is not None:
            log(f"training images: {len(self.images)} from {len(folders)} folder(s); skipped: {why}")

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, step: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """This process's slice of step ``step``'s global batch: float32 [batch/world, 3, size, size] in [0,1]."""
        return crop_batch(self.images, self.size, step, batch, seed, rank, world)[0]


def crop_batch(items: Sequence, size: int, step: int, batch: int, seed: int, rank: int = 0,
               world: int = 1, with_index: bool = False) -> tuple[torch.Tensor, ...]:
    """Random crops of step ``step``'s global batch, this process's slice, as float32 [b,3,size,size] in [0,1].

    ``items`` are uint8 [3,H,W] images, or tuples of same-sized ones (a photo and its stylised picture): every image
    of a tuple gets the same crop and flip, and one batch per tuple position is returned. ``with_index``: the items'
    indices (int64 [b]) come last, for labels kept beside the images (a style per pair).
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    index = torch.randint(len(items), (batch,), generator=g).tolist()
    out: list[list[torch.Tensor]] = []
    mine: list[int] = []
    for k, i in enumerate(index):
        group = items[i] if isinstance(items[i], tuple) else (items[i],)
        _, h, w = group[0].shape
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        flip = bool(torch.rand(1, generator=g) < 0.5)  # drawn for every sample, so slices stay aligned
        if k % world != rank:
            continue
        crops = [img[:, top:top + size, left:left + size] for img in group]
        out.append([c.flip(-1) if flip else c for c in crops])
        mine.append(i)
    columns = tuple(torch.stack(list(column)).float().div_(255) for column in zip(*out))
    return columns + (torch.tensor(mine, dtype=torch.int64),) if with_index else columns
