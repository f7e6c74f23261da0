"""How closely each method's pictures agree with a reference method's on the same pairs, from a finished
``atelier bench`` folder (the per-image outputs must still be there).

A lite encoder is meant to stand in for VGG19 inside the same optimisation, so besides the judge's distances the
question is: does ``--method lite`` make the picture ``--method gatys`` would have made? This prints and writes
``agreement.md``: mean PSNR and SSIM (luma) of each method's output against the reference's, per size.

    python benchmarks/agreement.py benchmarks/results/bench_lite_variants_256 --reference gatys
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="an atelier bench results folder")
    p.add_argument("--reference", default="gatys", help="method whose outputs are the reference")
    args = p.parse_args()
    from atelier.images import load_image
    from atelier.metrics import psnr, ssim

    results = json.loads((args.folder / "results.json").read_text())
    recs = [r for r in results["records"] if r["method"] != "textbook-gatys"]
    ref = {(r["size"], r["content_sha256"], r["style_sha256"]): r for r in recs if r["method"] == args.reference}
    if not ref:
        print(f"agreement: error: no {args.reference} records in {args.folder}", file=sys.stderr)
        return 2
    scores: dict = defaultdict(list)
    for r in recs:
        key = (r["size"], r["content_sha256"], r["style_sha256"])
        if r["method"] == args.reference or key not in ref:
            continue
        a = load_image(args.folder / r["output"])
        b = load_image(args.folder / ref[key]["output"])
        scores[(r["method"], r["size"])].append((float(psnr(a, b)), float(ssim(a, b))))
    lines = [f"Agreement with `{args.reference}` on the same pairs ({args.folder.name}): mean over pairs", "",
             f"| method | size | pairs | PSNR to {args.reference} dB ↑ | SSIM to {args.reference} ↑ |",
             "|---|---|---|---|---|"]
    for (method, size), vals in scores.items():
        n = len(vals)
        lines.append(f"| {method} | {size} | {n} | {sum(v[0] for v in vals) / n:.2f} | "
                     f"{sum(v[1] for v in vals) / n:.4f} |")
    (args.folder / "agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
