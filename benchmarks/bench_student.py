"""Student generators side by side: parameters, weight size, MACs and latency at 512x512, peak memory of a 4096x2160
image in tiles, and the speed-up over the teacher that made the pairs.

Latency is the median of ``--runs`` forward passes after two warm-ups, under ``torch.inference_mode``, in this
process; the 4096x2160 rows each run in their own process so their peak memory (VmHWM) is their own. Speed does not
depend on the weights, so generators without a trained model folder are timed freshly initialised (and say so);
``--model DIR`` (repeatable) times a trained student instead of its architecture's fresh copy, and adds the fidelity
its trainer measured on the held-out pairs (PSNR/SSIM against the teacher, from its config.json): students trained
on the same pairs folder share the same held-out pairs, so their fidelity columns compare. A generator may appear
several times (several trained folders); the 4K rows use the first tiny model given.

    python benchmarks/bench_student.py --runs 10 --model src/atelier/weights/starry-tiny \\
        --out benchmarks/results/student_cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def _hwm_mb() -> float:
    from atelier.bench.measure import peak_rss_mb

    return peak_rss_mb()


def latency(net, x: torch.Tensor, runs: int) -> float:
    with torch.inference_mode():
        for _ in range(2):
            net(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def tiled_worker(model: str, tile: int) -> dict:
    """One 4096x2160 image through a student, tiled or not; in its own process for its peak memory."""
    from atelier.methods.feedforward import StudentModel

    torch.manual_seed(0)
    m = StudentModel.from_folder(model)
    image = torch.rand(1, 3, 2160, 4096)
    before = _hwm_mb()
    t = time.perf_counter()
    out = m.run(image, tile=tile)
    seconds = time.perf_counter() - t
    return {"tile": tile, "seconds": seconds, "peak_rss_mb": _hwm_mb(), "before_mb": before,
            "shape": list(out.shape)}


def held_out_sheet(pairs: str, models: list, count: int, out: Path, cell: int = 192) -> Path:
    """Rows: the first ``count`` held-out pairs (the ones no model trained on); columns: photo, teacher, each model."""
    from PIL import Image, ImageDraw

    from atelier.bench.pictures import _fit, _font
    from atelier.images import tensor_to_pil
    from atelier.train.student import PairBank

    holdout = max(int(m.config.get("training", {}).get("data", {}).get("held_out", 16)) for m in models)
    held = PairBank(pairs, 64, holdout).held_out()[:count]
    labels = ["photo", "teacher"] + [f"{m.config['architecture']['generator']} ({m.folder.name})" for m in models]
    pad, lab, font = 6, 20, _font(13)
    rows = []  # one list of thumbnails per held-out pair
    for content, teacher in held:
        with torch.inference_mode():
            row = [content, teacher] + [m.run(content) for m in models]
        thumbs = [tensor_to_pil(t[0]) for t in row]
        for im in thumbs:
            im.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        rows.append(thumbs)
    heights = [max(im.height for im in r) for r in rows]
    sheet = Image.new("RGB", (pad + len(labels) * (cell + pad), lab + sum(heights) + pad * (len(rows) + 1)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(labels):
        draw.text((pad + j * (cell + pad) + cell // 2, 3), _fit(draw, text, cell, font), fill="black", font=font,
                  anchor="ma")
    y = lab
    for thumbs, h in zip(rows, heights):
        for j, im in enumerate(thumbs):
            sheet.paste(im, (pad + j * (cell + pad) + (cell - im.width) // 2, y + (h - im.height) // 2))
        y += h + pad
    sheet.save(out, quality=88)  # JPEG: a PNG of photographs is several times larger
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--model", action="append", default=[],
                   help="a trained student folder (repeatable; timed, fidelity read from its card)")
    p.add_argument("--teacher-seconds", type=float, default=0.0,
                   help="seconds the teacher took per 512 px picture (measured separately), for the speed-up column")
    p.add_argument("--out", type=Path, default=HERE / "results" / "student_cpu")
    p.add_argument("--pairs", default="", help="the pairs folder the models were trained on: draws a contact sheet "
                   "of held-out photos (photo, teacher, each --model) into --out")
    p.add_argument("--sheet", type=int, default=4, help="held-out photos in the contact sheet (default: 4)")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(tiled_worker(args.worker[0], int(args.worker[1]))))
        return 0
    from atelier.methods.feedforward import StudentModel
    from atelier import registry
    from atelier.nets import build_generator, count_macs

    x = torch.rand(1, 3, 512, 512)
    rows = []
    trained = [StudentModel.from_folder(m) for m in args.model]
    todo = []  # (label, net, fidelity or None): each trained model, and a fresh copy of each generator without one
    for name in registry.names("generator"):
        mine = [m for m in trained if m.config["architecture"]["generator"] == name]
        for m in mine:
            fid = m.config.get("training", {}).get("fidelity_held_out")
            todo.append((f"{name} (trained: {m.folder.name})", m.generator, fid))
        if not mine:
            torch.manual_seed(0)
            todo.append((f"{name} (fresh)", build_generator(name).eval(), None))
    for label, net, fid in todo:
        params = sum(p.numel() for p in net.parameters())
        macs = count_macs(net, x)
        if hasattr(net, "attention_macs"):
            macs += net.attention_macs(512, 512)
        print(f"{label} ...", file=sys.stderr, flush=True)
        sec = latency(net, x, args.runs)
        rows.append({"generator": label, "params": params, "fp32_mb": params * 4 / 2 ** 20, "gmacs_512": macs / 1e9,
                     "latency_ms_512": sec * 1000,
                     "speedup_vs_teacher": args.teacher_seconds / sec if args.teacher_seconds else None,
                     "psnr_db": fid.get("psnr_db") if fid else None, "ssim": fid.get("ssim") if fid else None,
                     "held_out": fid.get("pairs") if fid else None})
    tiled = []
    tiny = [str(m.folder) for m in trained if m.config["architecture"]["generator"] == "tiny"]
    if tiny:
        for tile in (512, 0):
            cmd = [sys.executable, __file__, "--worker", tiny[0], str(tile)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
            tiled.append(json.loads(out.stdout.strip().splitlines()[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_student.py " + " ".join(sys.argv[1:])
    machine = f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU"
    (args.out / "results.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows,
                                                       "tiled_4096x2160": tiled}, indent=1) + "\n")
    lines = [f"Command: `{command}`  ", f"Machine: {machine}", "",
             "| generator | params | fp32 MB | GMAC at 512x512 | median ms at 512x512 | speed-up vs teacher "
             "| held-out PSNR dB | held-out SSIM |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = f"{r['speedup_vs_teacher']:.0f}x" if r["speedup_vs_teacher"] else ""
        psnr = f"{r['psnr_db']:.2f}" if r["psnr_db"] is not None else ""
        ssim = f"{r['ssim']:.3f}" if r["ssim"] is not None else ""
        lines.append(f"| {r['generator']} | {r['params']:,} | {r['fp32_mb']:.2f} | {r['gmacs_512']:.2f} | "
                     f"{r['latency_ms_512']:.1f} | {speed} | {psnr} | {ssim} |")
    if tiled:
        lines += ["", "| 4096x2160 | seconds | peak RSS MB |", "|---|---|---|"]
        for t in tiled:
            lines.append(f"| {'tile ' + str(t['tile']) if t['tile'] else 'one pass'} | {t['seconds']:.2f} | "
                         f"{t['peak_rss_mb']:.0f} |")
    if args.pairs and trained:
        sheet = held_out_sheet(args.pairs, trained, args.sheet, args.out / "held_out_sheet.jpg")
        lines += ["", f"![held-out pairs]({sheet.name})"]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
