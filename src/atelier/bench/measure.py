"""What the harness measures with: multiply-accumulate counting, the machine's facts (matmul peak included), resident
and high-water memory of this process, and device synchronisation for honest timings."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from typing import Any, Optional

import torch

from .. import __version__


def status_mb(field: str) -> Optional[float]:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: "5" resets the high-water mark of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class MacCounter:
    """Counts multiply-accumulates of every ``Conv2d``/``Linear`` forward in the process while active.

    ``forward``: MACs of the forward passes. ``backward``: MACs the backward pass will spend on them (one forward's
    worth for the input gradient when the input needs one, one more for the weight gradient when the weight is
    trained); frozen feature nets only pay the first. ``params``: parameters of every module that ran.
    """

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0
        self._params: dict[int, int] = {}
        self._handle = None

    @property
    def params(self) -> int:
        return sum(self._params.values())

    def _hook(self, module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        if id(module) not in self._params:
            self._params[id(module)] = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        elif isinstance(module, torch.nn.Linear):
            k = module.in_features
        else:
            return
        if not isinstance(output, torch.Tensor):
            return
        macs = output.numel() * k
        self.forward += macs
        if output.requires_grad:
            x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            self.backward += macs * (int(x is not None and x.requires_grad) + int(module.weight.requires_grad))

    def __enter__(self) -> "MacCounter":
        self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def matmul_peak_gflops(device: torch.device, seconds: float = 0.5) -> float:
    """Best float32 matrix-multiply rate seen over about ``seconds`` on ``device``, in GFLOP/s."""
    n = 4096 if device.type == "cuda" else 1024
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    a @ b
    sync(device)
    best, reps, end = 0.0, 0, time.perf_counter() + seconds
    while reps < 3 or time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
        reps += 1
    return round(best, 1)


def machine_facts(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    facts = {"cpu": cpu, "logical_cpus": os.cpu_count(),
             "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
             "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
             "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
             "atelier": __version__}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    facts["matmul_peak_gflops"] = matmul_peak_gflops(device)
    return facts
