"""Bounded worker lanes and the job store behind ``/v1/jobs``.

Contracts:

- ``Lane(workers, max_queue)``: at most ``workers`` tasks run at once and at most ``max_queue`` wait; ``reserve()``
  beyond that raises ``QueueFull`` (the service answers 503 with its ``retry_after``). A reservation is released
  when its task ends, not when a client stops waiting, so the queue length always counts the real work in flight.
- ``JobStore``: one job = one record ``<results>/jobs/<id>.json`` and, when done, one image ``<id>.png`` beside it.
  Both are written atomically (temporary name, fsync, rename) at every change of state, the image before the record
  that says ``done``, so a record on disk never points at a missing or half-written image. A new store on the same
  folder (a restarted service) serves every finished job; jobs that were queued or running when the old process
  died are marked failed ("interrupted"), because their inputs and progress were lost with it. Progress lives in
  memory only (it changes at every loss evaluation). Uploads wait in ``<results>/uploads/<id>/`` (on disk, not in
  memory, so a full queue of large uploads costs disk, not RAM) and are deleted when the job ends.
- A job's ``runner(record, uploads, callback)`` does the work and returns ``(image, metadata)``; ``callback`` must be
  called with each ``StepInfo``: it records progress, and raises ``ServiceError`` to stop the run once the job passed
  its time limit or the store is closing. ``ServiceError(status, message)`` ends a job with that HTTP status (a
  request for the result of a failed job answers with it); ``AtelierError`` ends it with 422; anything else is a
  bug and ends it with 500.
- Ids are 32 lower-case hex digits (uuid4); anything else is not an id, so no user text reaches a path.
- A job is private to whoever created it: ``submit`` returns, with the record, a token (``secrets.token_urlsafe``)
  that nothing keeps; the record keeps only its sha256 (``token_sha256``), on disk too, so tokens survive a restart.
  ``read(id, token)`` gives the record (without the hash) only for the right token, compared in constant time, and
  None for an unknown id, a missing token and a wrong one alike, so a reader cannot tell an id exists. Records
  written before jobs had tokens have no hash: nobody can read them (they are pruned like any finished job).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import shutil
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

from ..errors import AtelierError
from ..files import atomic_write_text
from ..images import save_image
from ..progress import StepInfo

log = logging.getLogger("atelier.serve")

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
STATES = ("queued", "running", "done", "failed")
FINISHED = ("done", "failed")
TOKEN_KEY = "token_sha256"
_NO_HASH = "-" * 64  # compared against when there is no stored hash, so every read costs the same


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

Runner = Callable[[dict, dict, Callable[[StepInfo], None]], tuple[Any, dict]]


class QueueFull(Exception):
    """The lane has ``max_queue`` tasks waiting already; try again after ``retry_after`` seconds."""

    def __init__(self, lane: str, retry_after: int):
        super().__init__(f"the {lane} queue is full; try again in about {retry_after} s")
        self.retry_after = retry_after


class ServiceError(Exception):
    """Ends a request or a job with an HTTP status and a one-line message (the service answers
    ``{"error": message}``); ``headers`` go with the answer (``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: Optional[dict[str, str]] = None):
        super().__init__(" ".join(str(message).split()))
        self.status, self.headers = status, headers or {}


class Lane:
    """A fixed pool of worker threads with a bounded number of waiting tasks."""

    def __init__(self, name: str, workers: int, max_queue: int):
        self.name, self.workers, self.max_queue = name, workers, max_queue
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"atelier-{name}")
        self._lock = threading.Lock()
        self._pending = 0          # reserved: waiting or running
        self._durations: deque[float] = deque(maxlen=32)  # recent run times, for Retry-After

    @property
    def pending(self) -> int:
        return self._pending

    def reserve(self) -> None:
        """Count one more task in, or raise ``QueueFull``; follow with ``start`` or ``release``."""
        with self._lock:
            if self._pending >= self.workers + self.max_queue:
                raise QueueFull(self.name, self._retry_after())
            self._pending += 1

    def release(self) -> None:
        with self._lock:
            self._pending -= 1

    def start(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run a reserved task; its reservation ends when it ends (or is cancelled before it started)."""
        def timed() -> Any:
            t0 = time.monotonic()
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._durations.append(time.monotonic() - t0)

        try:
            future = self._pool.submit(timed)
        except RuntimeError:  # the pool is shut down: the service is stopping
            self.release()
            raise QueueFull(self.name, 5) from None
        future.add_done_callback(lambda _f: self.release())
        return future

    def retry_after(self) -> int:
        """Seconds until the lane probably has room for one more task (a full queue's ``Retry-After``)."""
        with self._lock:
            return self._retry_after()

    def _retry_after(self) -> int:
        # Time for the queue ahead to drain at the recent pace; at least a second, at most an hour.
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        waiting = max(1, self._pending - self.workers + 1)
        return int(min(3600, max(1, math.ceil(mean * waiting / self.workers))))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _now() -> float:
    return round(time.time(), 3)


class JobStore:
    """Jobs: records and results on disk, progress in memory, work on a ``Lane``."""

    def __init__(self, folder: Path, runner: Runner, *, workers: int = 1, max_queue: int = 16,
                 timeout: float = 900.0, keep: int = 500):
        self.folder = Path(folder)
        self.jobs_dir = self.folder / "jobs"
        self.uploads_dir = self.folder / "uploads"
        try:
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
            self.uploads_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AtelierError(f"cannot use {self.folder} as the results folder ({e.strerror or e}); "
                               "pass --results with a writable folder") from None
        self.runner, self.timeout, self.keep = runner, timeout, keep
        self.lane = Lane("jobs", workers, max_queue)
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}
        self._closing = threading.Event()
        self._load()

    # ------------------------------------------------------------------------------------------ records

    def _load(self) -> None:
        """Read the records a previous service left; jobs it did not finish can never finish now."""
        for path in sorted(self.jobs_dir.glob("*.json")):
            if not ID_PATTERN.fullmatch(path.stem):
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                log.warning("skipping unreadable job record %s", path)
                continue
            if not isinstance(record, dict) or record.get("id") != path.stem or record.get("state") not in STATES:
                log.warning("skipping malformed job record %s", path)
                continue
            if record["state"] == "done" and not self.result_path(path.stem).is_file():
                record.update(state="failed", status=500, error="the result file is missing from the results folder")
                self._write(record)
            elif record["state"] not in FINISHED:
                record.update(state="failed", status=503, finished=_now(),
                              error="interrupted: the service stopped before this job finished; submit it again")
                self._write(record)
            self._jobs[record["id"]] = record
        for leftover in self.uploads_dir.iterdir():  # inputs of interrupted jobs
            shutil.rmtree(leftover, ignore_errors=True)

    def _write(self, record: dict) -> None:
        atomic_write_text(self.jobs_dir / f"{record['id']}.json", json.dumps(record, indent=1) + "\n")

    def result_path(self, job_id: str) -> Path:
        if not ID_PATTERN.fullmatch(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.jobs_dir / f"{job_id}.png"

    def get(self, job_id: str) -> Optional[dict]:
        """A copy of the job's record, or None for an unknown id (or text that is not an id)."""
        if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
            return None
        with self._lock:
            record = self._jobs.get(job_id)
            return json.loads(json.dumps(record)) if record is not None else None

    def read(self, job_id: str, token: Optional[str]) -> Optional[dict]:
        """The job's record (without its token hash) for the holder of its token; None for an unknown id, a missing
        or wrong token, or a record without a hash (written before jobs had tokens: readable by nobody)."""
        record = self.get(job_id)
        stored = record.get(TOKEN_KEY) if record is not None else None
        has_hash = isinstance(stored, str) and len(stored) == 64
        given = token_hash(token) if isinstance(token, str) and token else ""
        # compare_digest on bytes: constant time whatever the stored text holds.
        same = hmac.compare_digest((given or _NO_HASH).encode(), (stored if has_hash else _NO_HASH).encode())
        if record is None or not has_hash or not given or not same:
            return None
        record.pop(TOKEN_KEY, None)
        return record

    def counts(self) -> dict[str, int]:
        with self._lock:
            out = {s: 0 for s in STATES}
            for r in self._jobs.values():
                out[r["state"]] += 1
            return out

    # --------------------------------------------------------------------------------------------- work

    def submit(self, method: str, options: dict[str, Any], uploads: dict[str, bytes],
               inputs: Optional[dict[str, Any]] = None) -> tuple[dict, str]:
        """Queue a job (raises ``QueueFull``); returns its record (without the token hash) and its token, which only
        the caller gets. ``uploads`` maps file names (``content``, ``style-0``...) to bytes; ``inputs`` (JSON)
        describes them for the runner and the record (the clients' file names)."""
        if self._closing.is_set():
            raise QueueFull(self.lane.name, 5)
        self.lane.reserve()  # before writing anything: a full queue costs the client nothing but the upload
        job_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        folder = self.uploads_dir / job_id
        try:
            folder.mkdir()
            for name, data in uploads.items():
                (folder / name).write_bytes(data)
            record = {"id": job_id, TOKEN_KEY: token_hash(token), "state": "queued", "method": method,
                      "options": options, "inputs": inputs or {},
                      "created": _now(), "started": None, "finished": None, "progress": None,
                      "error": None, "status": None, "result": None}
            self._write(record)
        except BaseException as e:
            self.lane.release()
            shutil.rmtree(folder, ignore_errors=True)
            if isinstance(e, OSError):
                raise AtelierError(f"cannot store the job's uploads ({e.strerror or e}); the service's disk may "
                                   "be full") from None
            raise
        with self._lock:
            self._jobs[job_id] = record
        self.lane.start(self._run, job_id)
        shown = {k: v for k, v in (self.get(job_id) or record).items() if k != TOKEN_KEY}
        return shown, token

    def _run(self, job_id: str) -> None:
        with self._lock:
            record = self._jobs[job_id]
            record.update(state="running", started=_now())
            snapshot = json.loads(json.dumps(record))
        # (A crash now leaves "queued" or "running" on disk: interrupted either way after a restart.)
        deadline = time.monotonic() + self.timeout
        folder = self.uploads_dir / job_id

        def callback(info: StepInfo) -> None:
            done_before = info.scale * info.total  # every scale runs the same number of evaluations
            progress = {"scale": info.scale, "scales": info.scales, "step": info.step, "total": info.total,
                        "evaluations": info.evaluations, "evaluations_total": info.total * info.scales,
                        "fraction": round((done_before + info.step) / max(1, info.total * info.scales), 4),
                        "loss": info.loss if math.isfinite(info.loss) else None,
                        "parts": {k: float(v) for k, v in info.parts.items()},
                        "elapsed": round(info.elapsed, 3), "size": list(info.size)}
            with self._lock:
                record["progress"] = progress
            # Checked between loss evaluations: an optimisation cannot be interrupted from outside its thread.
            if self._closing.is_set():
                raise ServiceError(503, "the service stopped while this job ran; submit it again")
            if time.monotonic() > deadline:
                raise ServiceError(504, f"the job ran past the service's time limit of {self.timeout:g} s; ask for "
                                 "fewer iterations or a smaller size")

        state, status, error, result = "failed", None, None, None
        try:
            self._write(snapshot)
            uploads = {p.name: p for p in sorted(folder.iterdir())}
            image, metadata = self.runner(snapshot, uploads, callback)
            if time.monotonic() > deadline:  # the engine may not call back at all (or not after its last step)
                raise ServiceError(504, f"the job ran past the service's time limit of {self.timeout:g} s")
            try:
                path = save_image(image, self.result_path(job_id), metadata)
            except AtelierError as e:  # the service's disk, not the client's input
                log.error("job %s: %s", job_id, e)
                raise ServiceError(500, "the service could not store the result; see the service's log") from None
            with Image.open(path) as im:  # the header only: the size as stored
                width, height = im.size
            state, result = "done", {"width": width, "height": height, "metadata": metadata}
        except ServiceError as e:
            status, error = e.status, str(e)
        except AtelierError as e:
            status, error = 422, str(e)
        except Exception as e:  # a bug: keep the traceback in the log, give the client one line
            log.exception("job %s failed", job_id)
            status, error = 500, f"internal error ({type(e).__name__}); see the service's log"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            final = json.loads(json.dumps(record))
        final.update(state=state, status=status, error=error, result=result, finished=_now())
        if state == "done" and final.get("progress"):
            final["progress"]["fraction"] = 1.0
        # On disk first, then visible: a client that saw the job finish finds it finished after a restart too.
        try:
            self._write(final)
        except AtelierError as e:  # served from memory until a restart, which will call it interrupted
            log.error("job %s: cannot write its record: %s", job_id, e)
        # Make room before the job shows as finished: then a client never sees more than `keep` finished jobs.
        with self._lock:
            drop = self._take_oldest(extra=1)
        self._delete(drop)
        with self._lock:
            record.clear()
            record.update(final)

    def _take_oldest(self, extra: int = 0) -> list[dict]:
        """Remove from memory the oldest finished jobs beyond ``keep``, counting ``extra`` about to finish (call with
        the lock held)."""
        finished = sorted((r for r in self._jobs.values() if r["state"] in FINISHED),
                          key=lambda r: r.get("finished") or 0)
        drop = finished[:max(0, len(finished) + extra - self.keep)]
        for r in drop:
            del self._jobs[r["id"]]
        return drop

    def _delete(self, drop: list[dict]) -> None:
        """Delete dropped jobs' files, record first, so no record outlives its image."""
        for r in drop:
            (self.jobs_dir / f"{r['id']}.json").unlink(missing_ok=True)
            self.result_path(r["id"]).unlink(missing_ok=True)

    def close(self) -> None:
        """Stop taking jobs; running ones stop at their next loss evaluation, queued ones never start."""
        self._closing.set()
        self.lane.shutdown()
