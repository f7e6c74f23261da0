"""Gatys engine vs a plain textbook implementation, side by side in one run.

Measures, at each size: seconds per loss evaluation, peak resident memory (each run in its own process), and the
time our engine needs to reach the textbook loop's final loss (same objective, evaluated at full size).

  textbook : full VGG19 forward (all 16 convs and 5 pools) every evaluation, single scale, L-BFGS in one
             ``step(max_iter=N)`` call with pixels clamped inside the closure (the PyTorch tutorial's shape);
             the implementation lives in the library, ``atelier.bench.baseline.textbook_gatys``
  single   : atelier's engine at one scale (VGG run only to the deepest layer needed, targets computed once)
  auto     : atelier's engine, coarse-to-fine (--scales auto), a few evaluations per scale

All three minimise the same objective (atelier.losses with the default weights and layers) on the same VGG19
weights, so their loss values compare directly. Without real VGG19 weights the run uses seeded random ones and
says so in every record.

    python benchmarks/bench_gatys.py --sizes 256,512 --evals 200 --out benchmarks/results/gatys_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_CONTENT = DATA / "content" / "tubingen.jpg"
DEFAULT_STYLE = DATA / "styles" / "vangogh_the_starry_night.jpg"


def _rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec.
    from atelier.bench.measure import peak_rss_mb

    return peak_rss_mb()


def _inputs(size: int, content: Path, style: Path):
    from atelier.images import load_image

    return load_image(content, size=size), load_image(style, size=size)


def worker(mode: str, size: int, evals: int, per_scale: int, weights: str, content: Path, style: Path) -> dict:
    from atelier.bench.baseline import textbook_gatys
    from atelier.options import StylizeOptions
    from atelier.features.vgg import load_vgg19
    from atelier.methods.optimize import optimize

    torch.manual_seed(0)
    c, s = _inputs(size, content, style)
    net = load_vgg19(weights=weights)
    o = StylizeOptions(size=size)
    rss_setup = _rss_mb()
    record = {"mode": mode, "size": size, "weights": net.identity, "hw": list(c.shape[-2:])}

    if mode == "textbook":
        _, trace = textbook_gatys(c, s, net, o, evals)
        record.update(evaluations=len(trace), seconds=trace[-1][0], final_loss=trace[-1][1],
                      trace=trace)
    else:
        opts = StylizeOptions(size=size, iterations=evals if mode == "single" else per_scale,
                              scales="none" if mode == "single" else "auto")
        res = optimize(net, c, [s], opts)
        last = res.scale_sizes[-1]
        trace = [(h["elapsed"], h["loss"]) for h in res.history]
        final_scale = [(h["elapsed"], h["loss"]) for h in res.history if tuple(h["size"]) == tuple(last)]
        record.update(evaluations=res.evaluations, seconds=res.seconds, final_loss=res.history[-1]["loss"],
                      scales=[list(hw) for hw in res.scale_sizes], trace=trace, final_scale_trace=final_scale)
    tr = record["trace"]
    # Seconds per evaluation, skipping the first three (warm-up); at the final scale for multi-scale runs.
    steady = record.get("final_scale_trace", tr)
    if len(steady) > 4:
        record["sec_per_eval"] = (steady[-1][0] - steady[2][0]) / (len(steady) - 3)
    record["peak_rss_mb"] = _rss_mb()
    record["rss_after_setup_mb"] = rss_setup
    return record


def run_worker(args, mode: str, size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--sizes", str(size), "--evals", str(args.evals),
           "--per-scale", str(args.per_scale), "--weights", args.weights,
           "--content", str(args.content), "--style", str(args.style)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_to_reach(trace: list, target: float, tolerance: float = 1e-3) -> float | None:
    """Seconds until the loss is within ``tolerance`` (relative) of ``target``: engine and textbook run the same
    L-BFGS on the same objective, and float noise alone must not decide "reached"."""
    for t, loss in trace:
        if loss <= target * (1 + tolerance):
            return t
    return None


def plot(traces: list, weights: str, path: Path) -> None:
    """Objective against seconds, one panel per size (matplotlib's Agg canvas; skipped if matplotlib is absent)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    sizes = sorted({t["size"] for t in traces})
    fig = Figure(figsize=(5.5 * len(sizes), 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes):
        for t in traces:
            if t["size"] == size:
                secs, losses = zip(*t["trace"])
                ax.plot(secs, losses, label=t["mode"], lw=1.3, color="black" if t["mode"] == "textbook" else None)
        ax.set_yscale("log")
        ax.set_xlabel("seconds")
        ax.set_ylabel("objective (coarse scales of auto are not comparable)")
        ax.set_title(f"{size} px, {weights}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--evals", type=int, default=200, help="loss evaluations for textbook and single")
    p.add_argument("--per-scale", type=int, default=100, help="evaluations per scale for auto")
    p.add_argument("--weights", default=os.environ.get("ATELIER_VGG_WEIGHTS", "random"))
    p.add_argument("--content", type=Path, default=DEFAULT_CONTENT)
    p.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    p.add_argument("--out", type=Path, default=HERE / "results" / "gatys_cpu")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        rec = worker(args.worker, int(args.sizes), args.evals, args.per_scale, args.weights, args.content,
                     args.style)
        print(json.dumps(rec))
        return 0
    for f in (args.content, args.style):
        if not f.is_file():
            print(f"bench_gatys: error: {f} not found (needs ../shared/data beside the checkout)", file=sys.stderr)
            return 2

    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(), "device": "cpu"}
    try:
        with open("/proc/cpuinfo") as fh:
            machine["cpu"] = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows, traces = [], []
    for size in [int(s) for s in args.sizes.split(",")]:
        recs = {}
        for mode in ("textbook", "single", "auto"):
            print(f"[{size}px] {mode} ...", file=sys.stderr, flush=True)
            recs[mode] = run_worker(args, mode, size)
        base = recs["textbook"]
        # The target is the textbook loop's best loss, not its last: without a line search L-BFGS sometimes
        # overshoots late, and its last iterate is then worse than what it had already reached.
        target = min(loss for _, loss in base["trace"])
        for mode, r in recs.items():
            trace = r.get("final_scale_trace", r["trace"])
            reach = time_to_reach(trace, target)
            traces.append({"size": size, "mode": mode, "trace": r["trace"]})
            rows.append({
                "size": size, "mode": mode, "hw": r["hw"], "weights": r["weights"],
                "evaluations": r["evaluations"], "seconds": round(r["seconds"], 2),
                "sec_per_eval": round(r.get("sec_per_eval", float("nan")), 4),
                "speedup_per_eval": round(base["sec_per_eval"] / r["sec_per_eval"], 2) if "sec_per_eval" in r else None,
                "peak_rss_mb": round(r["peak_rss_mb"]), "rss_after_setup_mb": round(r["rss_after_setup_mb"]),
                "final_loss": round(r["final_loss"], 5),
                "best_loss": round(min(loss for _, loss in trace), 5),
                "sec_to_textbook_best_loss": None if reach is None else round(reach, 2),
                "time_ratio_to_textbook": None if reach is None else round(reach / base["seconds"], 3),
                "scales": r.get("scales"),
            })
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_gatys.py " + " ".join(sys.argv[1:])
    (args.out / "results.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows,
                                                       "traces": traces}, indent=1))
    plot(traces, rows[0]["weights"], args.out / "convergence.png")
    lines = [f"Command: `{command}`  ", f"Machine: {machine['cpu']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, CPU  ", f"Weights: {rows[0]['weights']}", "",
             "| size | mode | evals | s/eval | speed-up/eval | peak RSS MB | last loss | best loss (full size) | "
             "s to within 0.1% of textbook's best loss | time vs textbook's whole run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reach = "not reached" if r["sec_to_textbook_best_loss"] is None else f"{r['sec_to_textbook_best_loss']}"
        ratio = "" if r["time_ratio_to_textbook"] is None else f"{r['time_ratio_to_textbook']}x"
        lines.append(f"| {r['size']} | {r['mode']} | {r['evaluations']} | {r['sec_per_eval']} | "
                     f"{r['speedup_per_eval']}x | {r['peak_rss_mb']} | {r['final_loss']} | {r['best_loss']} | {reach} | "
                     f"{ratio} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
