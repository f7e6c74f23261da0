"""Which EfficientNet-Lite0 levels make the effnet engine paint: level sets side by side on the same pairs, judged by
EfficientNet-Lite2 and drawn on one contact sheet.

    python benchmarks/effnet_levels.py --size 512 --out benchmarks/results/effnet_levels_512

Every row runs ``atelier.stylize(method="effnet")`` with the engine's defaults except the levels it names. The pairs
are three photographs and three paintings of ``../shared/data``; the judge and its levels are the bench's
(``atelier.bench.JUDGE_LEVELS["effnet-lite2"]``). The sheet shows thumbnails only (most photographs are
research-only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
PAIRS = (("content/tubingen.jpg", "styles/vangogh_the_starry_night.jpg"),
         ("content/bsds500_100007.jpg", "styles/hokusai_the_great_wave_off_kanagawa.jpg"),
         ("content/kodak24_kodim23.jpg", "styles/munch_the_scream.jpg"))
DEFAULT_STYLE = "stem,b1_dw,b3_dw,b5_dw,b11_dw"
CONFIGS = {  # name: (style levels, content levels)
    "dw (default)": (DEFAULT_STYLE, "b7_dw"),
    "block outputs": ("stem,b1,b3,b5,b11", "b7"),
    "expansions": ("stem,b1_expand,b3_expand,b5_expand,b11_expand", "b7_expand"),
    "content b5_dw": (DEFAULT_STYLE, "b5_dw"),
    "content b11_dw": (DEFAULT_STYLE, "b11_dw"),
}


def main() -> int:
    import atelier
    from atelier.bench import JUDGE_LEVELS
    from atelier.features.effnet import load_effnet
    from atelier.images import load_image, resize_to
    from atelier.metrics import judge_distances

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--out", type=Path, default=HERE / "results" / "effnet_levels_512")
    args = p.parse_args()
    pairs = [(DATA / c, DATA / s) for c, s in PAIRS]
    missing = [str(f) for pair in pairs for f in pair if not f.is_file()]
    if missing:
        print(f"effnet_levels: error: {missing[0]} not found (needs ../shared/data beside the checkout)",
              file=sys.stderr)
        return 2
    judge = load_effnet(variant="lite2")
    levels = JUDGE_LEVELS["effnet-lite2"]
    rows, cells = [], []
    for content, style in pairs:
        c = load_image(content, size=args.size)
        s = load_image(style, size=args.size)
        row = [Image.open(content).convert("RGB"), Image.open(style).convert("RGB")]
        for name, (style_levels, content_levels) in CONFIGS.items():
            t0 = time.perf_counter()
            r = atelier.stylize(c, s, method="effnet", size=args.size, style_layers=style_levels,
                                content_layers=content_levels)
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                d = judge_distances(r.tensor, resize_to(c, tuple(r.tensor.shape[-2:])), s, judge, levels["style"],
                                    levels["content"])
            rec = {"config": name, "content": content.name, "style": style.name, "seconds": round(seconds, 2),
                   **{k: round(float(v), 4) for k, v in d.items()}}
            rows.append(rec)
            print(json.dumps(rec), flush=True)
            row.append((r.image, name))
        cells.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"judge": judge.identity, "size": args.size, "rows": rows},
                                                      indent=1) + "\n")
    lines = [f"Command: `python benchmarks/effnet_levels.py --size {args.size}`  ", f"Judge: `{judge.identity}`", "",
             "| levels | style | content | style Gram ↓ | style mean/std ↓ | content ↓ | s/image |",
             "|---|---|---|---|---|---|---|"]
    for name, (style_levels, content_levels) in CONFIGS.items():
        mine = [r for r in rows if r["config"] == name]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("style_gram", "style_meanstd", "content_unit",
                                                                 "seconds")}
        lines.append(f"| {name} | {style_levels} | {content_levels} | {mean['style_gram']:.4f} | "
                     f"{mean['style_meanstd']:.4f} | {mean['content_unit']:.4f} | {mean['seconds']:.1f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    th = 200
    sheet = Image.new("RGB", (th * (2 + len(CONFIGS)), len(cells) * (th + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            im, label = (cell, ("photo", "style")[j]) if j < 2 else cell
            im = im.copy()
            im.thumbnail((th, th), Image.LANCZOS)
            sheet.paste(im, (j * th, i * (th + 14) + 14))
            draw.text((j * th + 2, i * (th + 14)), label, fill="black")
    sheet.save(args.out / "contact_sheet.png", optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
