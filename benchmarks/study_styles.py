"""Judge style sets (``atelier train styles`` model folders) on held-out pairs, side by side with their teacher.

For every model and every style: PSNR and SSIM of the student's picture against the teacher's on the held-out photos
(pairs folders from ``atelier prepare``, one per style, named as the model's styles), and the Lite2 judge's distances
(``style_gram`` and ``style_meanstd`` against the painting, ``content_unit`` against the photo) for the student and,
once, for the teacher. Pictures: a contact sheet of public-domain photos (scikit-image's astronaut, cat and coffee;
never the research-only training photos): photo | teacher | each model, for a few styles.

    python benchmarks/study_styles.py --models A_DIR,B_DIR --labels a,b --held /work/runs/set/held \\
        --out benchmarks/results/styles_study
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from atelier.api import load_model, stylize
from atelier.images import load_image, tensor_to_pil, to_image_tensor
from atelier.metrics import judge_distances, psnr, ssim
from atelier.train.manifest import read_manifest

JUDGE = {"style": ("stem", "b1_dw", "b4_dw", "b7_dw", "b15_dw"), "content": ("b10_dw", "b14_dw")}


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def held_pairs(folder: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    recs = sorted(read_manifest(folder), key=lambda r: r["id"])
    return [(load_image(folder / r["content"]), load_image(folder / r["stylized"])) for r in recs]


def style_image(folder: Path) -> torch.Tensor:
    recs = read_manifest(folder)
    return load_image(recs[0]["style"], 512)


def judge(net, out, photo, painting) -> dict[str, float]:
    d = judge_distances(out, photo, painting, net, JUDGE["style"], JUDGE["content"])
    return {k: float(v.mean()) for k, v in d.items()}


def mean_of(rows: list[dict], key: str) -> float:
    return round(statistics.fmean(r[key] for r in rows), 4)


def evaluate(models: list[Path], labels: list[str], held_root: Path, limit: int, threads: int = 2) -> dict:
    from atelier.features.effnet import load_effnet

    torch.set_num_threads(threads)
    net = load_effnet(variant="lite2")
    loaded = [load_model(m) for m in models]
    styles = loaded[0].style_names
    results: dict = {"styles": {}, "models": {lab: {} for lab in labels}, "teacher": {}}
    for style in styles:
        folder = held_root / style
        pairs = held_pairs(folder)[:limit or None]
        painting = style_image(folder)
        t_rows = [judge(net, t, c, painting) for c, t in pairs]
        results["teacher"][style] = {k: mean_of(t_rows, k) for k in t_rows[0]}
        for lab, m in zip(labels, loaded):
            rows = []
            t0 = time.perf_counter()
            for c, t in pairs:
                out = stylize(c, style, model=m, size=max(c.shape[-2:])).tensor
                out8 = (out * 255).round() / 255
                rows.append({"psnr_db": float(psnr(out8, t)), "ssim": float(ssim(out8, t)),
                             **judge(net, out, c, painting)})
            results["models"][lab][style] = {k: mean_of(rows, k) for k in rows[0]}
            results["models"][lab][style]["seconds"] = round(time.perf_counter() - t0, 1)
        results["styles"][style] = {"pairs": len(pairs), "painting": Path(read_manifest(folder)[0]["style"]).name}
        print(f"{style}: " + ", ".join(f"{lab} {results['models'][lab][style]['psnr_db']:.2f} dB"
                                       for lab in labels), file=sys.stderr, flush=True)
    for lab in labels:
        per = results["models"][lab].values()
        results["models"][lab]["mean"] = {k: round(statistics.fmean(p[k] for p in per), 4)
                                          for k in ("psnr_db", "ssim", "style_gram", "style_meanstd", "content_unit")}
    per = results["teacher"].values()
    results["teacher"]["mean"] = {k: round(statistics.fmean(p[k] for p in per), 4)
                                  for k in ("style_gram", "style_meanstd", "content_unit")}
    return results


def photos() -> list[tuple[str, torch.Tensor]]:
    from skimage import data

    return [(n, to_image_tensor(getattr(data, n)(), 256)) for n in ("astronaut", "chelsea", "coffee")]


def sheet(models: list[Path], labels: list[str], held_root: Path, styles: list[str], out: Path) -> Path:
    from atelier.nets.magenta_port import load_magenta
    from atelier.methods.magenta import embed

    nets = load_magenta(None, torch.device("cpu"))
    cols = ["photo", "teacher (magenta)", *labels]
    rows = [(n, p, s) for s in styles for n, p in photos()[:2]]
    cell, pad, lab = 200, 4, 18
    font = _font(12)
    im = Image.new("RGB", (pad + len(cols) * (cell + pad), lab + pad + len(rows) * (cell + lab + pad)), "white")
    draw = ImageDraw.Draw(im)
    for j, c in enumerate(cols):
        draw.text((pad + j * (cell + pad) + cell // 2, lab // 2), c, fill="black", font=font, anchor="mm")
    for i, (name, photo, style) in enumerate(rows):
        painting = style_image(held_root / style)
        with torch.inference_mode():
            teacher = nets.transformer(photo, embed(nets, painting)).clamp(0, 1)
        cells = [photo, teacher] + [stylize(photo, style, model=m).tensor for m in models]
        y = lab + pad + i * (cell + lab + pad)
        for j, t in enumerate(cells):
            p = tensor_to_pil(t)
            p.thumbnail((cell, cell))
            im.paste(p, (pad + j * (cell + pad), y))
        draw.text((pad, y + cell + 2), f"{name} / {style}", fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, quality=90)
    return out


def markdown(results: dict, labels: list[str]) -> str:
    lines = ["| model | PSNR (dB) | SSIM | style_gram | style_meanstd | content_unit |", "|---|---|---|---|---|---|"]
    t = results["teacher"]["mean"]
    lines.append(f"| teacher (magenta) | - | - | {t['style_gram']} | {t['style_meanstd']} | {t['content_unit']} |")
    for lab in labels:
        m = results["models"][lab]["mean"]
        lines.append(f"| {lab} | {m['psnr_db']:.2f} | {m['ssim']:.3f} | {m['style_gram']} | {m['style_meanstd']} | "
                     f"{m['content_unit']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated style set folders")
    ap.add_argument("--labels", default="", help="comma-separated labels (default: folder names)")
    ap.add_argument("--held", required=True, help="folder of held-out pairs folders, one per style")
    ap.add_argument("--limit", type=int, default=0, help="held-out pairs per style (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sheet-styles", default="", help="styles on the contact sheet (default: the first three)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    models = [Path(m) for m in a.models.split(",")]
    labels = a.labels.split(",") if a.labels else [m.name for m in models]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate(models, labels, Path(a.held), a.limit, a.threads)
    results["command"] = " ".join(["python", *sys.argv])
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, labels))
    print(markdown(results, labels))
    styles = a.sheet_styles.split(",") if a.sheet_styles else load_model(models[0]).style_names[:3]
    print(f"wrote {sheet(models, labels, Path(a.held), styles, out / 'sheet.jpg')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
