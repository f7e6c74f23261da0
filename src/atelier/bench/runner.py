"""``run``: plan, run every pending job, score each finished image with the judge, and write the reports.

Scoring (``_score``), on the saved 8-bit output: under the judge at its ``JUDGE_LEVELS``, ``style_gram`` and
``style_meanstd`` against the style and ``content_unit`` against the content (``metrics.judge_distances``); then
``ssim`` to the content and ``colour_hellinger`` to the style. The content is resized to the output's size first.

Resume. Keys are (method, content sha256, style sha256, size, iterations, judge). A second run with the same ``out``
and the same arguments skips finished records; different arguments in a non-empty ``out`` are refused (use a new
``out`` or delete the old one): numbers made under different settings never share a table.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional

from .. import __version__
from ..files import atomic_path
from ..images import open_image, pil_to_tensor, resize_to
from .files import append_jsonl, read_jsonl, write_json
from .inputs import Plan, prepare
from .jobs import run_subprocess, run_job
from .measure import machine_facts
from ..options import BenchOptions
from .judges import FORMAT_VERSION, JUDGE_LEVELS
from .report import write_reports


def _record_key(r: dict) -> tuple:
    return (r["method"], r["content_sha256"], r["style_sha256"], r["size"], r["iterations"], r["judge"])


def _score(plan: Plan, raw: dict, machine: dict) -> dict:
    from .. import metrics

    size = raw["size"]
    out_img = pil_to_tensor(open_image(plan.out / raw["output"]))  # the saved 8-bit file, as a user gets it
    # Content-side metrics compare equal sizes; an engine may return a size a pixel off the input's.
    content = resize_to(plan.inputs[(raw["content_sha256"], size)], tuple(out_img.shape[-2:]))
    style = plan.inputs[(raw["style_sha256"], size)]
    net = plan.judge
    levels = JUDGE_LEVELS[plan.options.judge]
    pair = next(p for p in plan.pairs
                if (p.content_sha256, p.style_sha256) == (raw["content_sha256"], raw["style_sha256"]))
    rec = dict(raw)
    rec.update(judge=net.identity, content=pair.content, style=pair.style,
               matmul_peak_gflops=machine["matmul_peak_gflops"], atelier_version=__version__,
               finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    judged = metrics.judge_distances(out_img, content, style, net, levels["style"], levels["content"])
    rec["quality"] = {
        **{k: float(v) for k, v in judged.items()},  # style_gram, style_meanstd, content_unit
        "ssim": float(metrics.ssim(out_img, content)),
        "colour_hellinger": float(metrics.colour_distance(out_img, style)),
    }
    return rec


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(*, log: Optional[Callable[[str], None]] = _stderr, **options: Any) -> list[dict]:
    """Benchmark ``options.methods`` (see ``BenchOptions``) and write the reports; returns every record of ``out``.

    Raises ``AtelierError`` (nothing written) for bad input. Interrupted, it keeps the finished records and rebuilds
    the reports from them before re-raising; called again with the same options it resumes.
    """
    o = BenchOptions.from_kwargs(**options)
    say = log or (lambda msg: None)
    plan = prepare(o)
    out, work = plan.out, plan.out / "work"
    o = replace(o, out=str(out))  # the command in the reports names the folder actually used
    machine = machine_facts(plan.device)
    work.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    meta = json.loads(run_file.read_text()) if run_file.is_file() else {
        "format": FORMAT_VERSION, "signature": plan.signature, "pairs": [asdict(p) for p in plan.pairs],
        "invocations": []}
    meta["options"] = {f.name: getattr(o, f.name) for f in fields(o)}
    meta["invocations"].append({"command": o.command(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "machine": machine})
    write_json(run_file, meta)
    records_file, raw_file = out / "records.jsonl", work / "raw.jsonl"
    records = read_jsonl(records_file, repair=True)
    raw_lines = read_jsonl(raw_file, repair=True)
    done = {_record_key(r) for r in records}
    judge = plan.judge.identity
    say(f"bench: judge {judge}" + (" (no pretrained VGG19 found: seeded random weights)"
                                   if o.judge == "vgg19" and plan.judge.is_random else ""))

    def score_pending() -> None:
        for raw in read_jsonl(raw_file):
            key = _record_key({**raw, "judge": judge})
            if key not in done and (out / raw["output"]).is_file():
                rec = _score(plan, raw, machine)
                append_jsonl(records_file, rec)
                done.add(key)

    # Preprocessed inputs go to a temporary folder, not into ``out``: results folders may be committed, and the
    # photographs' pixels must not travel with them.
    scratch = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    try:
        if raw_lines:
            score_pending()  # images an interrupted run finished but had not scored yet
        for size in o.sizes:
            for m in [plan.baseline, *plan.methods]:
                pairs = plan.pairs[:o.baseline_pairs] if m.kind == "baseline" else plan.pairs
                items = [{"content_sha256": p.content_sha256, "style_sha256": p.style_sha256,
                          "output": f"images/{m.label}/{size}/{p.content_sha256[:12]}_{p.style_sha256[:12]}.png"}
                         for p in pairs
                         if (m.label, p.content_sha256, p.style_sha256, size, o.iterations, judge) not in done]
                if not items:
                    continue
                inputs_file = scratch / f"inputs-{size}.safetensors"
                if not inputs_file.is_file():
                    from safetensors.torch import save_file

                    tensors = {sha: t.contiguous() for (sha, s), t in plan.inputs.items() if s == size}
                    with atomic_path(inputs_file) as tmp:
                        save_file(tensors, str(tmp))
                job = {"method": m.spec, "label": m.label, "kind": m.kind, "size": size,
                       "iterations": o.iterations, "device": str(plan.device), "vgg_weights": o.vgg_weights,
                       "inputs": str(inputs_file), "out": str(out), "items": items, "isolated": o.isolate}
                say(f"bench: {m.label} at {size} px, {len(items)} image(s)"
                    + (" (in a process of its own)" if o.isolate else ""))
                count = [0]

                def on_record(raw: dict) -> None:
                    append_jsonl(raw_file, raw)
                    count[0] += 1
                    say(f"bench:   {count[0]}/{len(items)} {raw['method']} {raw['size']} px: "
                        f"{raw['seconds']:.2f} s, {raw['evaluations']} evaluations")

                if o.isolate:
                    run_subprocess(job, work, on_record)
                else:
                    run_job(job, on_record)
                score_pending()  # after the job, so scoring never competes with a timed run for the CPU
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        results = write_reports(out) if read_jsonl(records_file) else {"records": []}
    say(f"bench: wrote {out / 'results.md'}")
    return results["records"]
