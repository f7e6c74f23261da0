"""Load test of the HTTP service: N requests, C at a time, to ``POST /v1/stylize`` with a student, over real HTTP.

The service runs as its own process (``atelier.serve.run_server`` on 127.0.0.1, a free port), so the client's threads
do not share a GIL or torch's threads with it. After ``--warmup`` requests (model load, first-call costs), the
timed requests go out from ``--concurrency`` threads over one keep-alive connection pool. Latency is measured in the
client per request (upload, queueing, the forward pass, PNG encoding, download); the service's own compute time per
request comes from its ``X-Atelier-Seconds`` header. Any answer other than 200 with a decodable PNG of the expected
size counts as an error, by status (``exception`` for a failed connection).

    python benchmarks/load_test.py --requests 300 --concurrency 8 --size 256 --workers 1 \\
        --out benchmarks/results/serve_load

Writes ``results.json`` (every setting, the machine, each request's latency) and ``results.md`` (the table).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from atelier.files import atomic_write_text

HERE = Path(__file__).resolve().parent
SERVER_CODE = """
import json, sys
from atelier.options import ServeOptions
from atelier.serve import run_server
run_server(ServeOptions.from_kwargs(**json.loads(sys.argv[1])))
"""


def free_port() -> int:
    # The port is free when asked; the server binds it a moment later (fine for a benchmark on a quiet machine).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image(width: int, height: int) -> bytes:
    """A smooth gradient with some texture, as PNG: photo-like enough for a forward pass; no data files needed."""
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    arr = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx // 8 + yy // 8) % 2 * 180],
                   -1) + rng.integers(-20, 21, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def expected_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    # atelier.images.long_side_hw: long side exact, short side rounded half up.
    scale = long_side / max(width, height)
    if width >= height:
        return long_side, max(1, int(height * scale + 0.5))
    return max(1, int(width * scale + 0.5)), long_side


def start_server(options: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-c", SERVER_CODE, json.dumps(options)], stdout=log,
                            stderr=subprocess.STDOUT, env=dict(os.environ))


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the service was not ready after {timeout:g} s")


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    return float(np.percentile(sorted_values, q)) if sorted_values else float("nan")


def run(args: argparse.Namespace, scratch: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The service's job folder and log go to a scratch folder: this test makes no jobs, and keeps no log.
    options = {"host": "127.0.0.1", "port": port, "workers": args.workers, "max_queue": max(16, args.concurrency),
               "results": str(scratch / "jobs"), "log_level": "warning", "torch_threads": args.torch_threads}
    log_path = scratch / "server.log"
    proc = start_server(options, log_path)
    payload = test_image(args.width, args.height)
    want = expected_size(args.width, args.height, args.size)
    fields = {"model": args.model, "size": str(args.size)}
    latencies: list[float] = []
    compute: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    try:
        try:
            wait_ready(url, proc)
        except SystemExit:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        with httpx.Client(base_url=url, timeout=args.timeout, limits=limits,
                          headers={"X-Atelier-Request": "1"}) as client:  # the service's anti-CSRF header

            def one(_: int, record: bool = True) -> None:
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/stylize", files={"image": ("bench.png", payload, "image/png")}, data=fields)
                    ok = r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == want
                    kind = "ok" if ok else (str(r.status_code) if r.status_code != 200 else "bad image")
                except Exception as e:  # counted, not raised: a load test reports its failures
                    kind, r = f"exception:{type(e).__name__}", None
                seconds = time.perf_counter() - t0
                if not record:
                    return
                with lock:
                    if kind == "ok":
                        latencies.append(seconds)
                        compute.append(float(r.headers.get("x-atelier-seconds", "nan")))
                    else:
                        errors[kind] = errors.get(kind, 0) + 1

            for i in range(args.warmup):
                one(i, record=False)
            t_start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - t_start
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    lat = sorted(latencies)
    ms = lambda v: round(v * 1000, 2)  # noqa: E731
    import torch

    summary = {
        "requests": args.requests, "concurrency": args.concurrency, "ok": len(lat),
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "wall_s": round(wall, 3), "throughput_rps": round(len(lat) / wall, 2) if wall > 0 else None,
        "latency_ms": {"p50": ms(percentile(lat, 50)), "p95": ms(percentile(lat, 95)), "p99": ms(percentile(lat, 99)),
                       "max": ms(lat[-1]) if lat else None, "mean": ms(statistics.fmean(lat)) if lat else None},
        "service_compute_ms_median": ms(statistics.median(compute)) if compute else None,
    }
    return {
        "summary": summary,
        "settings": {"model": args.model, "size": args.size, "input": f"{args.width}x{args.height} PNG",
                     "input_bytes": len(payload), "output": f"{want[0]}x{want[1]}", "workers": args.workers,
                     "torch_threads": args.torch_threads or "auto (cores / (2 x workers))", "warmup": args.warmup,
                     "timeout_s": args.timeout},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
        "latencies_ms": [ms(v) for v in latencies],
    }


def markdown(result: dict) -> str:
    s, st = result["summary"], result["settings"]
    lat = s["latency_ms"]
    lines = [
        f"Service load test: {s['requests']} requests, {s['concurrency']} concurrent, student `{st['model']}` at "
        f"{st['size']} px ({st['input']} in, {st['output']} out), {st['workers']} worker(s), "
        f"{result['machine']['cores']} cores, torch {result['machine']['torch']}.",
        "",
        "| requests | concurrency | errors | throughput req/s | p50 ms | p95 ms | p99 ms | max ms | "
        "service compute ms (median) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {s['requests']} | {s['concurrency']} | {s['errors']} | {s['throughput_rps']} | {lat['p50']} | "
        f"{lat['p95']} | {lat['p99']} | {lat['max']} | {s['service_compute_ms_median']} |",
    ]
    if s["errors_by_kind"]:
        lines += ["", "Errors: " + ", ".join(f"{k}: {v}" for k, v in sorted(s["errors_by_kind"].items()))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=300, help="timed requests (default: 300)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: 8)")
    p.add_argument("--model", default="starry-tiny", help="student to call (default: starry-tiny)")
    p.add_argument("--size", type=int, default=256, help="output long side in pixels (default: 256)")
    p.add_argument("--width", type=int, default=512, help="width of the uploaded test image (default: 512)")
    p.add_argument("--height", type=int, default=384, help="height of the uploaded test image (default: 384)")
    p.add_argument("--workers", type=int, default=1, help="the service's --workers (default: 1)")
    p.add_argument("--torch-threads", type=int, default=0, help="the service's --torch-threads (default: 0, auto)")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests first (default: 10)")
    p.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, seconds (default: 60)")
    p.add_argument("--out", default=str(HERE / "results" / "serve_load"), help="results folder")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be at least 1")
    with tempfile.TemporaryDirectory(prefix="atelier-load-") as scratch:
        result = run(args, Path(scratch))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    atomic_write_text(out / "results.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "results.md", table)
    print(table)
    return 0 if result["summary"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
