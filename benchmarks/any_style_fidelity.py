"""Held-out fidelity of an arbitrary-style student against its Magenta teacher, on unseen and on seen styles, with two
yardsticks: the teacher's own picture blurred by a 5x5 binomial kernel (how much a smooth copy loses) and the photo
itself. Photos at 320 px long side; styles embedded from their centre square at 256 px, as the student does.

    python benchmarks/any_style_fidelity.py MODEL --photos content-held --unseen styles-held --seen styles-train \\
        --photo-limit 12 --style-limit 6
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier.api import load_model
from atelier.images import IMAGE_EXTENSIONS, load_image
from atelier.methods.magenta import embed
from atelier.metrics import psnr
from atelier.nets.magenta_port import load_magenta


def files(folder: str, limit: int) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:limit or None]


def blurred(t: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None, :] / 256).expand(3, 1, 5, 5)
    return F.conv2d(F.pad(t, (2, 2, 2, 2), mode="reflect"), k, groups=3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--photos", required=True)
    ap.add_argument("--unseen", required=True)
    ap.add_argument("--seen", required=True)
    ap.add_argument("--photo-limit", type=int, default=12)
    ap.add_argument("--style-limit", type=int, default=6)
    a = ap.parse_args()
    torch.set_num_threads(2)
    g = load_model(a.model).generator
    nets = load_magenta(None)
    photos = [load_image(p, 320) for p in files(a.photos, a.photo_limit)]
    for label, folder in (("unseen", a.unseen), ("seen", a.seen)):
        rows: dict[str, list[float]] = {"student": [], "blurred teacher": [], "photo": []}
        for s in files(folder, a.style_limit):
            e = embed(nets, load_image(s, 512), cache=False)
            for c in photos:
                with torch.inference_mode():
                    t = nets.transformer(c, e).clamp(0, 1)
                    o = (g(c, e).clamp(0, 1) * 255).round() / 255
                rows["student"].append(float(psnr(o, t)))
                rows["blurred teacher"].append(float(psnr(blurred(t), t)))
                rows["photo"].append(float(psnr(c, t)))
        print(f"{label:<7} " + "  ".join(f"{k} {statistics.fmean(v):.2f} dB" for k, v in rows.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
