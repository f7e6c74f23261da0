"""The jobs: one method at one size over its pending pairs, timed, in a worker process of its own or in-process.

Contract for engines. A method is measured through ``atelier.api.stylize`` (tensors in, ``StylizeResult`` out), so
anything the registry can create is benchmarked without special cases: speed is the wall time of the call, MACs are
counted by a process-wide forward hook on every ``Conv2d``/``Linear`` the call runs, parameters are those of the
modules it runs, and evaluations come from its ``StepInfo`` callback. Student model folders (``MODEL_DIR``) are
accepted by the same path once ``atelier.api`` can load them (``api.load_model``); until then a folder is checked
and refused with a clear message.

Memory. Each method x size runs in its own Python subprocess (``isolate=True``, the default): peak resident memory is
that process's high-water mark (``VmHWM``), reported both whole (``peak_rss_mb``) and as the increase over the
process's resident size after imports and inputs, before the method loads its net (``rss_increase_mb``). No other
method's net, caches or allocator pools can hide in or inflate the figure. ``isolate=False`` runs in-process (faster
start, for tests and notebooks): the high-water mark is reset through ``/proc/self/clear_refs`` before each job,
but memory the allocator kept from an earlier job can make the increase read low; records say which mode made them.
On a GPU, ``peak_gpu_mb`` is ``torch.cuda.max_memory_allocated`` over the job.

The worker is ``python -c "...from atelier.bench.jobs import _worker_main..." JOB.json`` (``run_subprocess``): it
prints one ``ATELIER_BENCH {json}`` line per finished image and a user's error as one ``atelier: error:`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..options import StylizeOptions
from ..errors import AtelierError
from ..images import save_image
from .files import write_json
from .measure import MacCounter, peak_rss_mb, reset_peak_rss, status_mb, sync

_MARK = "ATELIER_BENCH "      # prefix of the worker's result lines on stdout


def _baseline_evals(size: int, iterations: int) -> int:
    # The same evaluation budget the engine spends at its default (auto) scales, all of it at full size.
    return iterations * len(StylizeOptions(size=size, scales="auto").scale_sizes())


def _engine_call(job: dict, device: torch.device) -> Callable:
    """``call(content, style, iterations, callback) -> (image [1,3,H,W] cpu, info)`` for the job's method."""
    base = {"size": job["size"], "device": job["device"], "vgg_weights": job["vgg_weights"]}
    if job["kind"] == "baseline":
        from .baseline import TextbookVGG19, textbook_gatys
        from ..features.vgg import load_vgg19

        holder: dict = {}

        def call_baseline(content, style, iterations, callback):
            if "net" not in holder:  # built on first use, so the warm-up pays for it, not the first image
                holder["net"] = TextbookVGG19.from_feature_net(load_vgg19(job["vgg_weights"], device=device))
            net = holder["net"]
            evals = _baseline_evals(job["size"], iterations)
            image, trace = textbook_gatys(content.to(device), style.to(device), net, StylizeOptions(**base),
                                          evals, callback)
            return image.cpu(), {"evaluations": len(trace), "optimizer_steps": None, "weights": net.identity,
                                 "random_weights": "random" in net.identity}

        return call_baseline

    from .. import api

    spec: Any = job["method"]
    if job["kind"] == "lite_model":  # a lite encoder's model folder: the lite engine with --lite-model
        spec, base = "lite", {**base, "lite_model": job["method"]}
    method = api.find_method(spec)  # any method, students included, through the one contract

    def call(content, style, iterations, callback):
        # Each method gets the options it reads (a student reads no iterations, and no style image).
        given = {k: v for k, v in {**base, "iterations": iterations}.items() if k in method.options}
        r = api.stylize(content, style if method.style == "required" else None, method, callback=callback, **given)
        return r.tensor, {"evaluations": r.evaluations, "optimizer_steps": r.optimizer_steps,
                          "weights": r.metadata.get("weights"), "random_weights": r.metadata.get("random_weights")}

    return call


def run_job(job: dict, emit: Callable[[dict], None]) -> None:
    """Run one method at one size over the job's pending pairs; ``emit`` gets one raw record per finished image.

    Called in a worker process (``isolate``) or in-process. Loads the preprocessed inputs the parent wrote, warms up
    once, then times each image, counting MACs with a forward hook (a Python call per module call: well under 1%
    of the time of a conv net forward), and saves each output atomically before emitting it.
    """
    from safetensors.torch import load_file

    from ..devices import resolve_device

    device = resolve_device(job["device"])
    inputs = load_file(job["inputs"])
    isolated = job["isolated"]
    if not isolated:
        reset_peak_rss()
    rss_start = status_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    call = _engine_call(job, device)
    items = job["items"]
    first = items[0]
    call(inputs[first["content_sha256"]], inputs[first["style_sha256"]], min(2, job["iterations"]), None)
    for item in items:
        content, style = inputs[item["content_sha256"]], inputs[item["style_sha256"]]
        trace: dict[str, list] = {"evaluations": [], "seconds": [], "loss": [], "scale": [], "macs": []}
        scale_hw: dict[int, list[int]] = {}
        counter = MacCounter()

        def callback(info) -> None:
            trace["evaluations"].append(info.evaluations)
            trace["seconds"].append(round(info.elapsed, 4))
            trace["loss"].append(info.loss)
            trace["scale"].append(info.scale)
            trace["macs"].append(counter.forward)
            scale_hw[info.scale] = list(info.size)

        sync(device)
        t0 = time.perf_counter()
        with counter:
            image, info = call(content, style, job["iterations"], callback)
            sync(device)
        seconds = time.perf_counter() - t0
        samples = [seconds]
        # Fast (feed-forward) engines: one run is too short to trust, so time more runs (without the MAC hook).
        while seconds < 0.2 and len(samples) < 10 and sum(samples) < 0.5:
            sync(device)
            t1 = time.perf_counter()
            call(content, style, job["iterations"], None)
            sync(device)
            samples.append(time.perf_counter() - t1)
        macs = trace.pop("macs")
        per_eval = None
        if len(macs) >= 2 and trace["scale"][-1] == trace["scale"][-2]:
            per_eval = macs[-1] - macs[-2]  # one evaluation at the final scale, nothing else in between
        out_path = Path(job["out"]) / item["output"]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        save_image(image, out_path, {"atelier_version": __version__, "bench_method": job["label"],
                                     "weights": info["weights"], "size": job["size"],
                                     "iterations": job["iterations"]})
        emit({"method": job["label"], "kind": job["kind"], "content_sha256": item["content_sha256"],
              "style_sha256": item["style_sha256"], "size": job["size"], "iterations": job["iterations"],
              "hw": list(content.shape[-2:]), "output": item["output"], "seconds": seconds,
              "latency_samples": samples, "evaluations": info["evaluations"],
              "optimizer_steps": info["optimizer_steps"], "weights": info["weights"],
              "random_weights": info["random_weights"], "trace": trace if trace["loss"] else None,
              "scale_sizes": [scale_hw[k] for k in sorted(scale_hw)], "macs_forward": counter.forward,
              "macs_backward": counter.backward, "macs_per_eval": per_eval, "params": counter.params,
              "rss_start_mb": rss_start, "peak_rss_mb": peak_rss_mb(),
              "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None,
              "memory_mode": "subprocess" if isolated else "in-process", "device": str(device),
              "torch_threads": torch.get_num_threads()})


def _worker_main(job_file: str) -> int:
    """Entry point of the worker process: run the job, print result lines, errors as one line on stderr."""
    job = json.loads(Path(job_file).read_text())
    try:
        run_job(job, lambda rec: print(_MARK + json.dumps(rec), flush=True))
    except AtelierError as e:
        print(f"atelier: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_subprocess(job: dict, work: Path, on_record: Callable[[dict], None]) -> None:
    job_file = work / f"job-{job['label']}-{job['size']}.json"
    write_json(job_file, job)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from atelier.bench.jobs import _worker_main; sys.exit(_worker_main(sys.argv[1]))"
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, str(job_file)], stdout=subprocess.PIPE, stderr=err,
                                text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(_MARK):
                    on_record(json.loads(line[len(_MARK):]))
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err.seek(0)
        lines = [ln for ln in err.read().splitlines() if ln.strip()]
    if rc == 0:
        job_file.unlink(missing_ok=True)
        return
    last = lines[-1] if lines else f"exit status {rc}"
    if last.startswith("atelier: error: "):
        raise AtelierError(last[len("atelier: error: "):])
    raise RuntimeError(f"bench worker for {job['label']} at {job['size']} px failed: " + " | ".join(lines[-5:]))
