"""The shared trainer: one loop for every model atelier trains (the lite encoder now, students later).

Contract for a task (a subclass of ``Task``, one per trainable thing):

* ``build(device)`` returns the trainable modules by name, seeded from the options (same seed, same start);
* ``optimizers(modules)`` returns the optimisers by name (default: one Adam over everything, named ``main``);
* ``train_step(models, optimizers, batch, step)`` runs one step (forward, backward, optimiser steps) on this process's
  slice of the batch and returns its loss parts as floats; ``models`` are the modules, wrapped in
  DistributedDataParallel under torchrun, so the task never checks whether it runs distributed;
* ``sample(modules, batch)`` returns a picture ``[1,3,H,W]`` in [0,1] for people to look at;
* ``export(modules)`` returns ``(state_dict, architecture, facts)`` for the model folder; ``card(facts)`` its card.

What the loop adds, the same for every task: progress bar (loss, ETA) on the first process; ``metrics.jsonl`` (one
JSON line every ``log_every`` steps, losses averaged over all processes); sample grids; resume checkpoints every
``checkpoint_every`` steps in the run folder (modules, optimisers, step, wall time, the options), which ``--resume``
continues exactly, refusing a checkpoint written with other options; and the model folder at the end. Every random
choice of a step comes from ``(seed, step)`` (see ``data.py``), so there is no generator state to lose.

Distributed: started by ``torchrun --nproc_per_node N``, each process takes ``batch / N`` of the same global batch,
gradients are averaged by DDP (gloo on CPU, NCCL on CUDA) and only the first process writes files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..folders import save_model_folder
from .resume import load_resume, save_resume
from ..options import TrainOptions
from ..errors import AtelierError
from ..files import atomic_write_text
from ..images import save_image
from .data import ImageBank

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SAMPLE_COUNT = 4


@dataclass
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


class Task:
    """One trainable thing; see the module docstring for the contract."""

    name = ""
    kind = ""  # the model folder's kind

    def __init__(self, options: TrainOptions):
        self.options = options

    def build(self, device: torch.device) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
        return {"main": torch.optim.Adam(params, lr=self.options.learning_rate)}

    def train_step(self, models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                   batch: Any, step: int) -> dict[str, float]:
        raise NotImplementedError

    def data(self, log: Callable[[str], None]) -> Any:
        """The training data: anything with ``batch(step, batch, seed, rank, world)``, ``len()`` and ``skipped``."""
        o = self.options
        return ImageBank(o.images, o.size, o.max_images, log)

    def data_facts(self, data: Any) -> dict[str, Any]:
        return {"folders": [str(Path(p).expanduser()) for p in self.options.images], "images": len(data),
                "skipped": data.skipped}

    def config_extra(self, facts: dict[str, Any]) -> dict[str, Any]:
        """Top-level keys the model folder's config.json gets besides kind, architecture, name and training."""
        return {}

    def sample(self, modules: dict[str, nn.Module], batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def export(self, modules: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], dict, dict]:
        raise NotImplementedError

    def card(self, facts: dict[str, Any]) -> str:
        raise NotImplementedError


def model_card(facts: dict[str, Any], title: str, summary: str, rows: list[tuple[str, str]],
               after: tuple[tuple[str, str], ...] = ()) -> str:
    """A model card: title, summary, then a facts table of ``rows``, the rows every trained model has (steps,
    compute, final losses, from the trainer's ``facts``) and ``after``."""
    losses = ", ".join(f"{k} {v:.4g}" for k, v in facts["final_losses"].items()) or "none (no steps)"
    common = [("steps", f"{facts['steps']} x batch {facts['batch']} random {facts['crop']} px crops, Adam lr "
                        f"{facts['learning_rate']}, seed {facts['seed']}"),
              ("compute", f"{facts['processes']} process(es) on {facts['device']}, {facts['seconds']} s wall"),
              ("final losses (mean of the last 50 steps)", losses)]
    table = [f"| {k} | {v} |" for k, v in [*rows, *common, *after]]
    return "\n".join([f"# {title}", "", summary, "", "| fact | value |", "|---|---|", *table, ""])


def setup(device_name: str) -> Context:
    """Join the torchrun process group when there is one; pick this process's device."""
    from ..devices import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, device)


def _options_record(options: TrainOptions) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()}


def _check_resume(options: TrainOptions, state: dict[str, Any], task: Task, path: Path) -> None:
    if state.get("task") != task.name:
        raise AtelierError(f"{path} is a checkpoint of {state.get('task')!r} training, not {task.name!r}")
    saved = state.get("options") or {}
    now = _options_record(options)
    diff = [k for k in now if k not in TrainOptions.RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        shown = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now[k]!r}" for k in diff[:4])
        raise AtelierError(f"cannot --resume: {path} was written with other options ({shown}); use the same "
                           "options, or another --out to start afresh")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint's step: the resumed run writes them again."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def _all_mean(parts: dict[str, float], ctx: Context) -> dict[str, float]:
    if not ctx.distributed:
        return parts
    import torch.distributed as dist

    keys = sorted(parts)
    t = torch.tensor([parts[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist())}


def _to(batch: Any, device: torch.device) -> Any:
    """A batch (a tensor, or a tuple of tensors such as (content, target)) on ``device``."""
    return tuple(b.to(device) for b in batch) if isinstance(batch, tuple) else batch.to(device)


def _size(batch: Any) -> int:
    return int((batch[0] if isinstance(batch, tuple) else batch).shape[0])


def lr_factor(step: int, steps: int) -> float:
    """Cosine decay from 1 to 0.1 over the run. A function of the step alone, so a resumed run needs no scheduler
    state and follows the same curve."""
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, steps) / max(1, steps)))


def _set_lr(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> float:
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor
    return factor


def train(task: Task, log: Optional[Callable[[str], None]] = None, progress: bool = True) -> Optional[Path]:
    """Run ``task`` to ``options.steps``; returns the model folder (on the first process; ``None`` elsewhere)."""
    o = task.options
    ctx = setup(o.device)
    finished = False
    try:
        out = _train(task, ctx, (log if ctx.main else None) or (lambda msg: None), progress and ctx.main)
        finished = True
        return out
    finally:
        if ctx.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                if finished:
                    # Leave together: a rank that tore gloo down while the first was still writing the model folder
                    # sometimes aborted at exit ("terminate called without an active exception"), and torchrun then
                    # killed the first mid-write (seen in 2 of 3 full test runs on 2 cores).
                    dist.barrier()
                dist.destroy_process_group()


def _train(task: Task, ctx: Context, log: Callable[[str], None], progress: bool) -> Optional[Path]:
    o = task.options
    out, run = Path(o.out).expanduser(), Path(o.run_folder()).expanduser()
    ckpt_path = run / CHECKPOINT
    if o.batch % ctx.world:
        raise AtelierError(f"--batch {o.batch} does not split over {ctx.world} processes; use a multiple of "
                           f"{ctx.world}")
    state = None
    if o.resume:
        state = load_resume(ckpt_path)
        _check_resume(o, state, task, ckpt_path)
    else:
        if ckpt_path.exists():
            raise AtelierError(f"{run} holds a checkpoint of an earlier run; pass --resume to continue it, or "
                               "choose another --out (or --run-dir)")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise AtelierError(f"--out {out} already exists; choose another folder or remove it")
    if not out.parent.is_dir():
        raise AtelierError(f"cannot write {out}: {out.parent} does not exist; create it first")

    bank = task.data(log)
    modules = task.build(ctx.device)
    optimizers = task.optimizers(modules)
    start, seconds_before = 0, 0.0
    if state is not None:
        for k, m in modules.items():
            m.load_state_dict(state["modules"][k])
        for k, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        start, seconds_before = int(state["step"]), float(state["seconds"])
        log(f"resuming from step {start} of {o.steps} ({ckpt_path})")
    if ctx.main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "samples").mkdir(exist_ok=True)
        _truncate_metrics(run / METRICS, start)
        atomic_write_text(run / "options.json", json.dumps(_options_record(o), indent=2) + "\n")
    models = modules
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        models = {k: DDP(m) if any(p.requires_grad for p in m.parameters()) else m for k, m in modules.items()}
    sample_batch = _to(bank.batch(step=0, batch=SAMPLE_COUNT, seed=o.seed + 7919), ctx.device)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=o.steps, initial=start, desc=f"train {task.name}", unit="step", file=sys.stderr,
                   dynamic_ncols=True)
    recent: deque = deque(maxlen=50)
    t0 = time.perf_counter()
    local = o.batch // ctx.world

    def checkpoint(step: int) -> None:
        if ctx.main:
            save_resume(ckpt_path, {
                "task": task.name, "step": step, "seconds": seconds_before + time.perf_counter() - t0,
                "options": _options_record(o), "world": ctx.world,
                "modules": {k: m.state_dict() for k, m in modules.items()},
                "optimizers": {k: opt.state_dict() for k, opt in optimizers.items()}})

    def write_sample(step: int) -> None:
        if ctx.main:
            with torch.no_grad():
                for m in modules.values():
                    m.eval()
                grid = task.sample(modules, sample_batch)
                for m in modules.values():
                    m.train()
            save_image(grid.cpu(), run / "samples" / f"step_{step:06d}.png")

    try:
        for m in modules.values():
            m.train()
        for step in range(start, o.steps):
            factor = _set_lr(optimizers, lr_factor(step, o.steps))
            batch = _to(bank.batch(step, o.batch, o.seed, ctx.rank, ctx.world), ctx.device)
            assert _size(batch) == local
            parts = _all_mean(task.train_step(models, optimizers, batch, step), ctx)
            if not all(math.isfinite(v) for v in parts.values()):
                raise AtelierError(f"training diverged at step {step + 1} (loss {parts}); lower --learning-rate "
                                   f"and --resume from the last checkpoint, or start afresh")
            recent.append(parts)
            done = step + 1
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in parts.items()}, refresh=False)
                bar.update(1)
            if ctx.main and (done % o.log_every == 0 or done == o.steps):
                elapsed = seconds_before + time.perf_counter() - t0
                line = {"step": done, **{k: round(v, 6) for k, v in parts.items()},
                        "lr": round(o.learning_rate * factor, 8), "seconds": round(elapsed, 2),
                        "images_per_s": round((done - start) * o.batch / max(1e-9, time.perf_counter() - t0), 2)}
                with open(run / METRICS, "a") as f:
                    f.write(json.dumps(line) + "\n")
            if done % o.checkpoint_every == 0 or done == o.steps:
                checkpoint(done)
            if o.sample_every and done % o.sample_every == 0:
                write_sample(done)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        raise AtelierError(f"interrupted; the last checkpoint is kept in {run}: run the same command with --resume "
                           "to continue") from None
    if bar is not None:
        bar.close()
    if not ctx.main:
        return None
    if o.steps == 0 or o.steps <= start:
        checkpoint(max(start, o.steps))
    write_sample(max(start, o.steps))
    seconds = seconds_before + time.perf_counter() - t0
    final = {k: round(sum(p[k] for p in recent) / len(recent), 6) for k in recent[0]} if recent else {}
    state_dict, architecture, facts = task.export(modules)
    facts = {**facts, "steps": o.steps, "batch": o.batch, "crop": o.size, "learning_rate": o.learning_rate,
             "seed": o.seed, "processes": ctx.world, "device": str(ctx.device), "seconds": round(seconds, 1),
             "final_losses": final,  # mean over the last 50 steps
             "data": task.data_facts(bank)}
    config = {"kind": task.kind, "architecture": architecture, "name": getattr(o, "name", None) or out.name,
              **task.config_extra(facts), "training": facts}
    save_model_folder(out, state_dict, config, task.card({**facts, "name": config["name"]}),
                      dtype=torch.float16 if o.fp16 else None)
    log(f"wrote {out} ({o.steps} steps, {seconds:.0f} s); run folder {run}")
    return out

