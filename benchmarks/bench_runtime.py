"""A student through torch and through the torch-free ONNX runtime (fp32, int8 dynamic, int8 static): latency, peak
memory and file size, with the int8 models' PSNR against fp32 as the export measured it.

The parent exports the model three times (``atelier.export.export_onnx``, into a temporary folder; each export runs
its own parity and PSNR checks) and then runs one process per (backend, size) row, so each row's peak resident
memory is its own. A row: imports, make a seeded random input, note the high-water mark, load the model, two warm-up
passes, then the median of ``--runs`` passes; "peak over start" is the high-water mark's growth after the input was
made. The ONNX rows import only ``atelier.runtime`` (onnxruntime, numpy, Pillow): no torch in their processes, which
is the point of the runtime. Memory is the process's ``VmHWM``, read here rather than through
``atelier.bench.measure.peak_rss_mb`` because that module imports torch and would inflate the ONNX rows; and not
``ru_maxrss``, which Linux carries over from the parent (the exporting, torch-holding process) through fork and exec.
Threads: ``--threads`` for torch (``torch.set_num_threads``) and onnxruntime (intra-op threads) alike.

    python benchmarks/bench_runtime.py --model starry-tiny --sizes 256,512,1024 --runs 10 --threads 2 \\
        --calibration ../shared/data/content --out benchmarks/results/runtime_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
BACKENDS = ("torch", "onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static")
QUANTIZE = {"onnx-fp32": "none", "onnx-int8-dynamic": "int8-dynamic", "onnx-int8-static": "int8-static"}


def _hwm_mb() -> float:
    """This process's high-water resident memory in MiB (see the module docstring for why it is read here)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark's memory columns need Linux")


def worker(backend: str, model: str, size: int, runs: int, threads: int) -> dict:
    """One row, in its own process (see the module docstring)."""
    import numpy as np

    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    if backend == "torch":
        import torch

        from atelier.methods.feedforward import StudentModel

        torch.set_num_threads(threads)
        start = _hwm_mb()
        t0 = time.perf_counter()
        student = StudentModel.from_folder(model)
        load_s = time.perf_counter() - t0
        xt = torch.from_numpy(x)

        def forward() -> None:
            student.run(xt)
    else:
        from atelier.runtime import OnnxStylizer

        start = _hwm_mb()
        t0 = time.perf_counter()
        stylizer = OnnxStylizer(model, threads=threads)
        load_s = time.perf_counter() - t0

        def forward() -> None:
            stylizer.run(x)
    for _ in range(2):  # warm-up: allocator growth, first-call kernel selection
        forward()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t)
    peak = _hwm_mb()
    return {"backend": backend, "size": size, "runs": runs, "threads": threads, "load_s": load_s,
            "median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000, "start_rss_mb": start,
            "peak_rss_mb": peak, "peak_over_start_mb": peak - start, "torch_loaded": "torch" in sys.modules}


def run_worker(backend: str, model: str, size: int, runs: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, "--model", model, "--sizes", str(size),
           "--runs", str(runs), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="starry-tiny", help="a student model folder or a bundled student's name")
    p.add_argument("--sizes", default="256,512,1024", help="square input sides")
    p.add_argument("--runs", type=int, default=10, help="timed passes per row, after two warm-ups")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", type=Path, default=DATA / "content",
                   help="photographs for int8-static (the row is skipped if the folder is absent)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "runtime_cpu")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, int(args.sizes), args.runs, args.threads)))
        return 0

    import torch

    from atelier.bench.measure import machine_facts
    from atelier.export import export_onnx
    from atelier.methods.feedforward import resolve_model

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    folder = str(resolve_model(args.model))
    rows, models, skipped = [], {}, []
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        files = {"torch": folder}
        for backend, quantize in QUANTIZE.items():
            calibration = None
            if quantize == "int8-static":
                if not args.calibration.is_dir():
                    skipped.append(f"{backend}: no calibration folder {args.calibration}")
                    continue
                calibration = args.calibration
            print(f"export {quantize} ...", file=sys.stderr, flush=True)
            report = export_onnx(folder, Path(tmp) / f"{quantize}.onnx", quantize=quantize, calibration=calibration)
            files[backend] = report.path
            models[backend] = {"file_kb": report.bytes / 1024, "psnr_vs_fp32_db": report.psnr_db,
                               "max_abs_diff_vs_torch": report.max_abs_diff,
                               "calibration_images": report.calibration_images}
        for size in sizes:
            for backend in BACKENDS:
                if backend not in files:
                    continue
                print(f"[{size}px] {backend} ...", file=sys.stderr, flush=True)
                rows.append(run_worker(backend, files[backend], size, args.runs, args.threads))
    facts = machine_facts(torch.device("cpu"))
    command = "python benchmarks/bench_runtime.py " + " ".join(sys.argv[1:])
    machine = f"{facts['cpu']}, {args.threads} threads, torch {facts['torch']}"
    try:
        import onnxruntime

        machine += f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"command": command, "machine": machine, "model": folder,
                                                       "models": models, "skipped": skipped, "rows": rows},
                                                      indent=1) + "\n")
    by = {(r["backend"], r["size"]): r for r in rows}
    lines = [f"Command: `{command}`  ", f"Machine: {machine}  ", f"Model: `{folder}`", "",
             "| model file | KB | max abs diff vs torch | PSNR vs fp32 dB |", "|---|---|---|---|"]
    for backend, m in models.items():
        psnr = f"{m['psnr_vs_fp32_db']:.1f}" if m["psnr_vs_fp32_db"] is not None else "(reference)"
        lines.append(f"| {backend} | {m['file_kb']:.0f} | {m['max_abs_diff_vs_torch']:.1e} | {psnr} |")
    lines += ["", "| size | backend | median ms | speed-up vs torch | peak RSS MB | peak over start MB |",
              "|---|---|---|---|---|---|"]
    for size in sizes:
        base = by.get(("torch", size))
        for backend in BACKENDS:
            r = by.get((backend, size))
            if r is None:
                continue
            speed = f"{base['median_ms'] / r['median_ms']:.2f}x" if base else ""
            lines.append(f"| {size}x{size} | {backend} | {r['median_ms']:.1f} | {speed} | {r['peak_rss_mb']:.0f} | "
                         f"{r['peak_over_start_mb']:.0f} |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
