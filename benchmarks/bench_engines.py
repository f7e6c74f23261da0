"""The lite engine against gatys, side by side in one run: weight file size, cold load time, seconds per loss
evaluation and peak memory at several sizes.

Each (engine, size) runs in its own process, so its peak resident memory is its own. Both engines run the same
optimisation code (``atelier.methods.optimize.optimize``, one scale, L-BFGS, default layers and weights); only the
feature net differs:

  gatys : VGG19 conv1_1..conv5_1 read from a slim safetensors file (the cache ``atelier weights fetch`` writes).
          No machine here has the ImageNet weights, so the file holds seeded random weights: same shapes, same
          bytes to read, same arithmetic, so load time, speed and memory are those of the real thing.
  lite  : the bundled lite encoder (or ``--lite-model DIR``), read from its model folder.

    python benchmarks/bench_lite.py --sizes 256,512,1024 --evals 10 --out benchmarks/results/lite_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_CONTENT = DATA / "content" / "tubingen.jpg"
DEFAULT_STYLE = DATA / "styles" / "vangogh_the_starry_night.jpg"
ENGINES = ("gatys", "lite")


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _slim_random_vgg(folder: Path) -> Path:
    """A slim VGG19 safetensors file with seeded random weights, written like the real cache."""
    from atelier.features import vgg

    os.environ["ATELIER_CACHE"] = str(folder)
    return vgg._write_slim(vgg._random_weights(0), strict=True)


def worker(engine: str, size: int, evals: int, weights: str, content: Path, style: Path) -> dict:
    from atelier.config import StylizeOptions
    from atelier.features.lite import BUNDLED, load_lite
    from atelier.features.vgg import load_vgg19
    from atelier.images import load_image
    from atelier.methods.optimize import optimize

    torch.manual_seed(0)
    c, s = load_image(content, size=size), load_image(style, size=size)
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    if engine == "gatys":
        net = load_vgg19(weights)
        files = [Path(weights)]
    else:
        net = load_lite(weights or None)
        files = [Path(weights or BUNDLED) / "model.safetensors"]
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    res = optimize(net, c, [s], StylizeOptions(size=size, iterations=evals, scales="none"))
    steady = [h["elapsed"] for h in res.history]
    # Skip the first two evaluations (warm-up: allocator growth, first-call dispatch).
    per_eval = (steady[-1] - steady[1]) / (len(steady) - 2) if len(steady) > 3 else None
    return {"engine": engine, "size": size, "hw": list(c.shape[-2:]), "weights": net.identity,
            "file_mb": sum(f.stat().st_size for f in files) / 2 ** 20,
            "params": sum(p.numel() for p in net.parameters()), "load_s": load_s,
            "load_rss_mb": rss_loaded - rss_before, "evaluations": res.evaluations, "sec_per_eval": per_eval,
            "peak_rss_mb": _rss_mb("VmHWM"), "peak_increase_mb": _rss_mb("VmHWM") - rss_before,
            "final_loss": res.history[-1]["loss"], "threads": torch.get_num_threads()}


def run_worker(args, engine: str, size: int, weights: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--sizes", str(size), "--evals", str(args.evals),
           "--weights", weights, "--content", str(args.content), "--style", str(args.style)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--evals", type=int, default=10, help="loss evaluations per run (the first two are not timed)")
    p.add_argument("--lite-model", default="", help="lite model folder (default: the bundled encoder)")
    p.add_argument("--content", type=Path, default=DEFAULT_CONTENT)
    p.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    p.add_argument("--out", type=Path, default=HERE / "results" / "lite_cpu")
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.sizes), args.evals, args.weights, args.content, args.style)))
        return 0
    for f in (args.content, args.style):
        if not f.is_file():
            print(f"bench_lite: error: {f} not found (needs ../shared/data beside the checkout)", file=sys.stderr)
            return 2
    machine = {"cpu": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            machine["cpu"] = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vgg_file = str(_slim_random_vgg(Path(tmp)))
        for size in [int(s) for s in args.sizes.split(",")]:
            for engine in ENGINES:
                print(f"[{size}px] {engine} ...", file=sys.stderr, flush=True)
                rows.append(run_worker(args, engine, size, vgg_file if engine == "gatys" else args.lite_model))
    by = {(r["engine"], r["size"]): r for r in rows}
    command = "python benchmarks/bench_lite.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows},
                                                      indent=1) + "\n")
    g0, l0 = by[("gatys", rows[0]["size"])], by[("lite", rows[0]["size"])]
    lines = [f"Command: `{command}`  ", f"Machine: {machine['cpu']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, CPU  ", f"gatys weights: `{g0['weights']}` (slim safetensors file); lite weights: "
             f"`{l0['weights']}`", "",
             "| engine | weight file MB | parameters | cold load s | RSS added by loading MB |", "|---|---|---|---|---|"]
    for r in (g0, l0):
        lines.append(f"| {r['engine']} | {r['file_mb']:.2f} | {r['params'] / 1e6:.3f} M | {r['load_s']:.3f} | "
                     f"{r['load_rss_mb']:.0f} |")
    ratio_mb, ratio_s = g0["file_mb"] / l0["file_mb"], g0["load_s"] / l0["load_s"]
    lines += [f"| ratio gatys/lite | {ratio_mb:.0f}x | | {ratio_s:.0f}x | |",
              "", "| size | engine | image | s/eval | speed-up/eval | peak RSS MB | peak increase over start MB | "
              "peak increase ratio |", "|---|---|---|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in rows}):
        g, li = by[("gatys", size)], by[("lite", size)]
        for r in (g, li):
            speed = g["sec_per_eval"] / r["sec_per_eval"]
            mem = g["peak_increase_mb"] / r["peak_increase_mb"]
            lines.append(f"| {size} | {r['engine']} | {r['hw'][1]}x{r['hw'][0]} | {r['sec_per_eval']:.4f} | "
                         f"{speed:.1f}x | {r['peak_rss_mb']:.0f} | {r['peak_increase_mb']:.0f} | {mem:.1f}x |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
