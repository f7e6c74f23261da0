"""Gatys engine vs a plain textbook implementation, side by side in one run.

Measures, at each size: seconds per loss evaluation, peak resident memory (each run in its own process), and the
time our engine needs to reach the textbook loop's final loss (same objective, evaluated at full size).

  textbook : full VGG19 forward (all 16 convs and 5 pools) every evaluation, single scale, L-BFGS in one
             ``step(max_iter=N)`` call with pixels clamped inside the closure (the PyTorch tutorial's shape)
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
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_CONTENT = DATA / "content" / "tubingen.jpg"
DEFAULT_STYLE = DATA / "styles" / "vangogh_the_starry_night.jpg"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class TextbookVGG19(nn.Module):
    """The whole of VGG19's feature stack, run end to end every time (no truncation)."""

    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]

    def __init__(self, source_convs: list[nn.Conv2d]):
        super().__init__()
        layers, names, cin, block, idx = [], [], 3, 1, 1
        for v in self.plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                names.append(f"pool{block}")
                block, idx = block + 1, 1
            else:
                conv = nn.Conv2d(cin, v, 3, padding=1)
                layers += [conv, nn.ReLU()]
                names += [f"conv{block}_{idx}", f"relu{block}_{idx}"]
                cin, idx = v, idx + 1
        self.body = nn.Sequential(*layers)
        self.names = names
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for i, conv in enumerate(convs):
                if i < len(source_convs):  # same weights as atelier's net for the layers both have
                    conv.weight.copy_(source_convs[i].weight)
                    conv.bias.copy_(source_convs[i].bias)
                else:  # conv5_2..conv5_4: atelier never loads them; random here, they only cost time
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (9 * conv.in_channels)) ** 0.5)
                    conv.bias.zero_()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        h = (x - self.mean) / self.std
        for name, m in zip(self.names, self.body):
            h = m(h)
            out[name] = h
        return out


def _inputs(size: int, content: Path, style: Path):
    from atelier.images import load_image

    return load_image(content, size=size), load_image(style, size=size)


def worker(mode: str, size: int, evals: int, per_scale: int, weights: str, content: Path, style: Path) -> dict:
    from atelier.config import StylizeOptions
    from atelier.features.vgg import load_vgg19
    from atelier.losses import content_loss, gram, style_loss, tv_loss
    from atelier.methods.optimize import optimize

    torch.manual_seed(0)
    c, s = _inputs(size, content, style)
    net = load_vgg19(weights=weights)
    o = StylizeOptions(size=size)
    rss_setup = _rss_mb()
    record = {"mode": mode, "size": size, "weights": net.identity, "hw": list(c.shape[-2:])}

    if mode == "textbook":
        full = TextbookVGG19([m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)])
        with torch.no_grad():
            fc, fs = full(c), full(s)
        tc = {n: fc[n] for n in o.content_layers}
        ts = {n: gram(fs[n]) for n in o.style_layers}
        x = c.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=evals, max_eval=evals, history_size=100,
                                tolerance_grad=0.0, tolerance_change=0.0)
        trace: list[tuple[float, float]] = []
        t0 = time.perf_counter()

        def closure():
            with torch.no_grad():
                x.clamp_(0, 1)
            opt.zero_grad()
            f = full(x)
            loss = (o.content_weight * sum(content_loss(f[n], tc[n]) for n in o.content_layers) / len(tc)
                    + o.style_weight * sum(style_loss(f[n], ts[n]) for n in o.style_layers) / len(ts)
                    + o.tv_weight * tv_loss(x))
            loss.backward()
            trace.append((time.perf_counter() - t0, float(loss)))
            return loss

        opt.step(closure)
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


def time_to_reach(trace: list, target: float) -> float | None:
    for t, loss in trace:
        if loss <= target:
            return t
    return None


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
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        recs = {}
        for mode in ("textbook", "single", "auto"):
            print(f"[{size}px] {mode} ...", file=sys.stderr, flush=True)
            recs[mode] = run_worker(args, mode, size)
        base = recs["textbook"]
        target = base["final_loss"]
        for mode, r in recs.items():
            trace = r.get("final_scale_trace", r["trace"])
            reach = time_to_reach(trace, target)
            rows.append({
                "size": size, "mode": mode, "hw": r["hw"], "weights": r["weights"],
                "evaluations": r["evaluations"], "seconds": round(r["seconds"], 2),
                "sec_per_eval": round(r.get("sec_per_eval", float("nan")), 4),
                "speedup_per_eval": round(base["sec_per_eval"] / r["sec_per_eval"], 2) if "sec_per_eval" in r else None,
                "peak_rss_mb": round(r["peak_rss_mb"]), "rss_after_setup_mb": round(r["rss_after_setup_mb"]),
                "final_loss": round(r["final_loss"], 5),
                "sec_to_textbook_final_loss": None if reach is None else round(reach, 2),
                "time_ratio_to_textbook": None if reach is None else round(reach / base["seconds"], 3),
                "scales": r.get("scales"),
            })
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/bench_gatys.py " + " ".join(sys.argv[1:])
    (args.out / "results.json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows},
                                                      indent=1))
    lines = [f"Command: `{command}`  ", f"Machine: {machine['cpu']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, CPU  ", f"Weights: {rows[0]['weights']}", "",
             "| size | mode | evals | s/eval | speed-up/eval | peak RSS MB | final loss | s to textbook's final loss | "
             "time vs textbook |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reach = "not reached" if r["sec_to_textbook_final_loss"] is None else f"{r['sec_to_textbook_final_loss']}"
        ratio = "" if r["time_ratio_to_textbook"] is None else f"{r['time_ratio_to_textbook']}x"
        lines.append(f"| {r['size']} | {r['mode']} | {r['evaluations']} | {r['sec_per_eval']} | "
                     f"{r['speedup_per_eval']}x | {r['peak_rss_mb']} | {r['final_loss']} | {reach} | {ratio} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
