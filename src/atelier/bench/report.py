"""The reports, rebuilt from a results folder's records at every run: the summary per method x size (speed-ups
against the textbook baseline, evaluations to its loss, GFLOP/s, memory, quality), results.json and results.md;
``write_reports`` also draws the pictures (``atelier.bench.pictures``)."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..files import atomic_write_text
from .files import read_jsonl, write_json
from .inputs import weights_file
from ..options.bench import BASELINE
from .judges import FORMAT_VERSION
from .pictures import contact_sheet, convergence_plot


def _pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (numpy's default), q in [0, 100]."""
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _sec_per_eval(trace: Optional[dict]) -> Optional[float]:
    """Seconds per evaluation at the final scale, skipping its first three (warm-up of that size)."""
    if not trace or len(trace["loss"]) < 2:
        return None
    last = trace["scale"][-1]
    t = [s for s, k in zip(trace["seconds"], trace["scale"]) if k == last]
    skip = 3 if len(t) > 5 else 1 if len(t) > 2 else 0
    return (t[-1] - t[skip]) / (len(t) - 1 - skip) if len(t) - 1 - skip > 0 else None


# "Reached" allows 0.1% above the target: the engine and the textbook loop run the same L-BFGS on the same
# objective, and float noise alone must not decide between "reached" and "not reached".
REACH_TOLERANCE = 1e-3


def _reach(trace: Optional[dict], target: float) -> tuple[Optional[int], Optional[float]]:
    """(evaluations, seconds) until the first final-scale evaluation within REACH_TOLERANCE of ``target``."""
    if not trace:
        return None, None
    last = trace["scale"][-1]
    for e, s, loss, k in zip(trace["evaluations"], trace["seconds"], trace["loss"], trace["scale"]):
        if k == last and loss <= target * (1 + REACH_TOLERANCE):
            return e, s
    return None, None


def _summarise(records: list[dict], first_pair: Optional[tuple[str, str]] = None) -> list[dict]:
    base: dict[tuple, dict] = {(r["content_sha256"], r["style_sha256"], r["size"]): r
                               for r in records if r["method"] == BASELINE}
    base_by_size: dict[int, list[dict]] = {}
    for r in base.values():
        base_by_size.setdefault(r["size"], []).append(r)
    for r in records:  # derived per-record figures, recomputed from the raw ones at every rebuild
        b = base.get((r["content_sha256"], r["style_sha256"], r["size"]))
        r["sec_per_eval"] = _sec_per_eval(r.get("trace"))
        r["gflops"] = 2 * (r["macs_forward"] + r["macs_backward"]) / r["seconds"] / 1e9 if r["seconds"] else None
        peak = r.get("matmul_peak_gflops")
        r["efficiency"] = r["gflops"] / peak if r["gflops"] and peak else None
        r["final_loss"] = r["trace"]["loss"][-1] if r.get("trace") else None
        if b is not None and r["method"] != BASELINE and b.get("trace") and r.get("trace"):  # students: no trace
            # The baseline's best loss, not its last: L-BFGS without a line search sometimes overshoots late.
            target = min(b["trace"]["loss"])
            r["target_loss"] = target
            r["evals_to_target"], r["seconds_to_target"] = _reach(r.get("trace"), target)
        else:
            r["target_loss"] = r["evals_to_target"] = r["seconds_to_target"] = None
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["size"]), []).append(r)
    summary = []
    for (method, size), rs in groups.items():
        lat = [s for r in rs for s in r["latency_samples"]]
        bs = base_by_size.get(size, [])
        # Speed-up on the same pair(s): the textbook's time over the method's, median over the baseline's pairs.
        ratios = [statistics.median(b["latency_samples"]) / statistics.median(r["latency_samples"])
                  for r in rs for b in bs if (r["content_sha256"], r["style_sha256"]) ==
                  (b["content_sha256"], b["style_sha256"])]
        b_spe = [b["sec_per_eval"] for b in bs if b.get("sec_per_eval")]
        spe = [r["sec_per_eval"] for r in rs if r.get("sec_per_eval")]
        reach = [r for r in rs if r.get("target_loss") is not None]
        q = {k: statistics.mean(r["quality"][k] for r in rs) for k in rs[0]["quality"]}
        median = statistics.median(lat)
        ref = next((r for r in rs if (r["content_sha256"], r["style_sha256"]) == first_pair), rs[0])
        gflops = [r["gflops"] for r in rs if r.get("gflops")]
        summary.append({
            "method": method, "size": size, "images": len(rs), "weights": rs[0]["weights"], "judge": rs[0]["judge"],
            "median_s": median, "p10_s": _pct(lat, 10), "p90_s": _pct(lat, 90),
            "speedup_vs_baseline": statistics.median(ratios) if ratios else None,
            "sec_per_eval": statistics.median(spe) if spe else None,
            "sec_per_eval_speedup": statistics.median(b_spe) / statistics.median(spe) if spe and b_spe else None,
            "evaluations": statistics.median(r["evaluations"] for r in rs),
            "evals_to_baseline_loss": [r["evals_to_target"] for r in reach],
            "seconds_to_baseline_loss": [r["seconds_to_target"] for r in reach],
            # MACs depend on each image's shape: report them on the first pair (where the baseline also ran).
            "gmacs_per_image": ref["macs_forward"] / 1e9,
            "gmacs_per_eval": ref["macs_per_eval"] / 1e9 if ref["macs_per_eval"] else None,
            "gmac_hw": ref["hw"],
            "gflops": statistics.median(gflops) if gflops else None,
            "efficiency": statistics.median(r["efficiency"] for r in rs if r.get("efficiency"))
            if any(r.get("efficiency") for r in rs) else None,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "rss_increase_mb": max(r["peak_rss_mb"] - (r["rss_start_mb"] or 0) for r in rs),
            "peak_gpu_mb": max((r["peak_gpu_mb"] for r in rs if r.get("peak_gpu_mb") is not None), default=None),
            "memory_mode": rs[0]["memory_mode"], "params": rs[0]["params"],
            "weights_file_bytes": rs[0].get("weights_file_bytes"),
            "quality": q,
        })
    order = {BASELINE: -1}
    summary.sort(key=lambda s: (s["size"], order.get(s["method"], 0)))
    return summary


def load_results(out: os.PathLike | str) -> dict:
    """Everything ``write_reports`` would write to results.json, rebuilt from ``out``'s records."""
    out = Path(out)
    meta = json.loads((out / "run.json").read_text())
    records = read_jsonl(out / "records.jsonl")
    for r in records:
        f = weights_file(r["weights"] or "", meta["options"].get("vgg_weights"))
        r["weights_file"], r["weights_file_bytes"] = (str(f), f.stat().st_size) if f else (None, None)
        r["param_bytes_fp32"] = r["params"] * 4
    last = meta["invocations"][-1]
    return {"format": FORMAT_VERSION, "atelier_version": __version__, "command": last["command"],
            "machine": last["machine"], "invocations": meta["invocations"], "judge": meta["signature"]["judge"],
            "judge_levels": meta["signature"]["judge_levels"], "options": meta["options"], "pairs": meta["pairs"],
            "baseline": {
                "method": BASELINE, "description": "full VGG19 (16 convs, 5 pools) every evaluation, one scale, "
                "L-BFGS; atelier.bench.baseline.textbook_gatys", "pairs": meta["options"]["baseline_pairs"]},
            "summary": _summarise(records, (meta["pairs"][0]["content_sha256"], meta["pairs"][0]["style_sha256"])),
            "records": records}


def write_reports(out: os.PathLike | str) -> dict:
    """(Re)write results.json, results.md, the contact sheets and the convergence plot from ``out``'s records."""
    out = Path(out)
    results = load_results(out)
    write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", render_markdown(results))
    sizes = sorted({r["size"] for r in results["records"]})
    for size in sizes:
        contact_sheet(results, out, size)
    convergence_plot(results, out / "convergence.png")
    return results


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


QUALITY_COLUMNS = ("style_gram", "style_meanstd", "content_unit", "ssim", "colour_hellinger")


def _quality_cells(q: dict) -> str:
    return " | ".join(f"{q[k]:.4f}" for k in QUALITY_COLUMNS)


def render_markdown(results: dict) -> str:
    m, o = results["machine"], results["options"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    random_judge = "random" in results["judge"]
    levels = results["judge_levels"]
    style_levels, content_levels = ", ".join(levels["style"]), ", ".join(levels["content"])
    n_c = len({p["content_sha256"] for p in results["pairs"]})
    n_s = len({p["style_sha256"] for p in results["pairs"]})
    lines = [
        "# atelier bench", "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"device {m['device']}{gpu}; float32 matmul peak {m['matmul_peak_gflops']} GFLOP/s (measured in this run)  ",
        f"Judge: `{results['judge']}`, style levels {style_levels}, content levels {content_levels}"
        + (" (seeded random weights: the quality numbers rank engines against each other under this judge only)"
           if random_judge else "") + "  ",
        f"Pairs: {len(results['pairs'])} ({n_c} contents x {n_s} styles, "
        f"{'auto: first by sha256 of the shared data' if o['pairs'] == 'auto' else o['pairs']}); "
        f"iterations {o['iterations']} per scale  ",
        f"Baseline: textbook Gatys ({results['baseline']['description']}) on the first "
        f"{o['baseline_pairs']} pair(s) at each size; speed-up = its time / the method's time on the same pair(s), "
        "measured in the same invocation",
        "", "## Speed, memory, size", "",
        "| method | size | weights | images | median s/image | p10–p90 s | speed-up vs textbook | s/eval "
        "(speed-up) | evals (s) to textbook's best loss | GMAC/eval (first pair) | GMAC/image (first pair) | "
        "GFLOP/s (% of peak) | "
        "peak RSS MB (+ over start) | params | weights MB |",
        "|" + "---|" * 15,
    ]
    for s in results["summary"]:
        reach = ", ".join("not reached" if e is None else f"{e} ({t:.1f})" for e, t in
                          zip(s["evals_to_baseline_loss"], s["seconds_to_baseline_loss"])) or "–"
        if s["method"] == BASELINE:
            reach = "(target)"
        size_mb = (s["weights_file_bytes"] / 1e6 if s.get("weights_file_bytes") else None)
        size_txt = f"{size_mb:.1f}" if size_mb else f"{s['params'] * 4 / 1e6:.1f} (fp32, no file)"
        eff = f" ({100 * s['efficiency']:.0f}%)" if s.get("efficiency") else ""
        gpu_mem = f", GPU {s['peak_gpu_mb']:.0f}" if s.get("peak_gpu_mb") is not None else ""
        spe = _fmt(s["sec_per_eval"]) + (f" ({s['sec_per_eval_speedup']:.2f}x)" if s["sec_per_eval_speedup"] else "")
        speed = f"{s['speedup_vs_baseline']:.2f}x" if s["speedup_vs_baseline"] else "–"
        lines.append(
            f"| {s['method']} | {s['size']} | `{s['weights']}` | {s['images']} | {s['median_s']:.2f} | "
            f"{s['p10_s']:.2f}–{s['p90_s']:.2f} | {speed} | {spe} | {reach} | {_fmt(s['gmacs_per_eval'])} | "
            f"{s['gmacs_per_image']:.1f} | {_fmt(s['gflops'])}{eff} | {s['peak_rss_mb']:.0f} "
            f"(+{s['rss_increase_mb']:.0f}){gpu_mem} | {s['params'] / 1e6:.2f} M | {size_txt} |")
    modes = sorted({s["memory_mode"] for s in results["summary"]})
    lines += ["", f"Memory: {', '.join(modes)} (see atelier.bench: each method x size in its own process unless "
              "in-process). GFLOP/s counts 2 FLOPs per multiply-accumulate of the Conv2d/Linear forwards and the "
              "backward passes they need (input gradients only for frozen nets), over the whole image's time.",
              "", f"## Quality (means over pairs; judge `{results['judge']}`)", "",
              "| method | size | style Gram ↓ | style mean/std ↓ | content (unit features) ↓ | SSIM to content ↑ | "
              "colour Hellinger to style ↓ |", "|---|---|---|---|---|---|---|"]
    for s in results["summary"]:
        lines.append(f"| {s['method']} | {s['size']} | {_quality_cells(s['quality'])} |")
    lines += ["", "Under the judge: style Gram = relative Gram-matrix distance to the style; style mean/std = "
              "relative distance of per-channel feature means plus that of stds; both mean over the style levels "
              f"({style_levels}). Content = LPIPS-like without learned weights: channel vectors unit-normalised at "
              "each position, squared distance averaged over positions (0 = same, at most 4), mean over the content "
              f"levels ({content_levels}). SSIM: luma, Gaussian window sigma 1.5; colour: Hellinger distance of "
              "RGB-uv histograms (HistoGAN). All on the saved 8-bit outputs.", "", "## Per image", "",
              "| method | size | content | style | s | evals | final loss | style Gram | style mean/std | content | "
              "SSIM | colour |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["records"]:
        lines.append(f"| {r['method']} | {r['size']} | {Path(r['content']).name} | {Path(r['style']).name} | "
                     f"{r['seconds']:.2f} | {r['evaluations']} | {_fmt(r['final_loss'], 4)} | "
                     f"{_quality_cells(r['quality'])} |")
    return "\n".join(lines) + "\n"
