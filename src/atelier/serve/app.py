"""The HTTP service: a FastAPI app over ``atelier.api``, its limits, its error shape, and running it with uvicorn.

Endpoints (``create_app(options)``)::

    GET  /                      the web page (static/index.html; nothing loaded from elsewhere)
    GET  /healthz               {"status": "ok", ...} with the lanes' load
    GET  /v1/models             students (bundled + --models DIR), engines with their options, the limits
    POST /v1/stylize            multipart: image, model, [size], [tile] -> image/png (one pass of a student)
    POST /v1/jobs               multipart: image, style (1..max_styles), [method=lite], [options] -> 202 {"id", ...}
    GET  /v1/jobs               the most recent jobs (?limit=N)
    GET  /v1/jobs/{id}          the job's record: state queued|running|done|failed, progress, error
    GET  /v1/jobs/{id}/result   image/png once done; a failed job answers with its own status and error

Every error is JSON ``{"error": "<one line>"}``, FastAPI's own (404, 405, validation) included. Status codes:

    400  an upload that is truncated or corrupt; a malformed multipart body, or one with far too many parts
    404  unknown path or job id (anything that is not 32 hex digits is unknown: no user text reaches a path)
    409  the result of a job that has not finished
    413  request body over max_upload_bytes (checked before the body is read), image over max_pixels (from its header)
    415  an upload that is not one of ``formats`` (identified from its bytes), a body that is not multipart/form-data
    422  unknown option or model, malformed value, value past a limit (size, iterations, number of styles), missing
         field, engine unavailable here
    500  a bug (the traceback goes to the log, not to the client)
    503  a lane's queue is full (``Retry-After`` estimates when it will have room); a job cut off by a shutdown
    504  a /v1/stylize request not answered within request_timeout; a job that ran past job_timeout (the job fails,
         and its result answers 504)

Two lanes of ``workers`` threads each keep a quick student request from waiting behind a long optimisation: one
for ``/v1/stylize``, one for jobs. A student forward pass cannot be interrupted, so a request past its time limit
gets its 504 at once while the pass finishes in the background, still counted in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL.PngImagePlugin import PngInfo
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import api
from ..config import ServeOptions
from ..errors import AtelierError
from ..images import METADATA_KEY
from . import inputs
from .jobs import JobStore, Lane, QueueFull, ServiceError

log = logging.getLogger("atelier.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page runs only what the service itself serves; blob: for showing a result fetched as bytes.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
_FORM_FIELDS = 64            # more fields than any request needs: a bound, not a feature
_FORM_FIELD_BYTES = 64 * 1024  # one option's text (files are not held to it)
_EXTRA_FILES = 16            # files past the expected count get a clear 422; far more stop the parser (400)


def default_results_dir() -> Path:
    """Where job records and results go without --results (the same cache root as the VGG19 weights)."""
    root = os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier"
    return Path(root).expanduser() / "serve-jobs"


# ------------------------------------------------------------------------------------------------ errors


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class _NoSniff:
    """Every response says ``X-Content-Type-Options: nosniff``, so a browser never runs a result or an error as
    something other than its declared type."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-content-type-options"]
                message = {**message, "headers": headers + [(b"x-content-type-options", b"nosniff")]}
            await send(message)

        return await self.app(scope, receive, send_with_header)


class _BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413 before the app parses it.

    A declared Content-Length is checked before a byte is read. A body without one (chunked) is read into memory up
    to the limit and replayed to the app, so the multipart parser never sees more than ``limit`` bytes.
    """

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await _error(400, "malformed Content-Length header")(scope, receive, send)
            if int(declared) > self.limit:
                return await self._too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            total += len(message.get("body", b""))
            if total > self.limit:
                return await self._too_large(scope, receive, send)
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return chunks.pop(0) if chunks else await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = _error(413, f"request body is larger than this service accepts ({self.limit:,} bytes in all); "
                               "send smaller images", {"Connection": "close"})
        await response(scope, receive, send)


# ----------------------------------------------------------------------------------------------- service


class Service:
    """What one app instance holds: its options, the model catalogue, the two lanes and the job store."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.catalog = inputs.Catalog(options.models)
        self.lane = Lane("stylize", options.workers, options.max_queue)
        results = Path(options.results).expanduser() if options.results else default_results_dir()
        self.jobs = JobStore(results, self._run_job, workers=options.workers, max_queue=options.max_queue,
                             timeout=options.job_timeout, keep=options.keep_jobs)

    def close(self) -> None:
        self.lane.shutdown()
        self.jobs.close()

    def _output_pixels(self) -> int:
        # Uploads were held to max_pixels from their headers (413); what the engine makes is bounded by max_size
        # (422), so the library's pixel limit here covers both: a small upload may be drawn at max_size.
        return max(self.options.max_pixels, self.options.max_size ** 2)

    # The two kinds of work, each run on a lane's worker thread.

    def _run_student(self, key: Any, data: bytes, filename: str, options: dict[str, Any]) -> tuple[bytes, dict]:
        try:
            model = api.load_model(key)
        except AtelierError as e:  # a damaged model folder is the operator's problem, not the client's
            log.error("cannot load model %s: %s", key, e)
            raise ServiceError(500, "the model could not be loaded on the service; see the service's log") from None
        image = inputs.decode(data, inputs.upload_label("image", filename), self.options.max_pixels)
        result = api.stylize(image, model=model, max_pixels=self._output_pixels(), **options)
        metadata = {k: v for k, v in result.metadata.items() if k != "model_folder"}  # no server paths out
        metadata["content"] = filename
        buf = io.BytesIO()
        info = PngInfo()
        info.add_text(METADATA_KEY, json.dumps(metadata))
        # compress_level 1: at 512 px level 6 takes longer than the student itself, for 10% fewer bytes.
        result.image.save(buf, format="PNG", pnginfo=info, compress_level=1)
        return buf.getvalue(), metadata

    def _run_job(self, record: dict, uploads: dict[str, Path], callback: Any) -> tuple[Any, dict]:
        names = record.get("inputs") or {}
        max_pixels = self.options.max_pixels
        content = inputs.decode(uploads["content"], inputs.upload_label("image", names.get("content")), max_pixels)
        style_files = sorted((n for n in uploads if n.startswith("style-")), key=lambda n: int(n.split("-")[1]))
        labels = list(names.get("styles") or [])
        labels += [""] * (len(style_files) - len(labels))
        styles = [inputs.decode(uploads[n], inputs.upload_label("style", labels[i]), max_pixels)
                  for i, n in enumerate(style_files)]
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in record["options"].items()}
        result = api.stylize(content, styles, record["method"], callback=callback, max_pixels=self._output_pixels(),
                             **options)
        metadata = dict(result.metadata, content=names.get("content", ""), styles=labels, job=record["id"])
        return result.tensor, metadata


async def _read_form(request: Request, file_fields: tuple[str, ...], max_files: int) \
        -> tuple[dict[str, str], dict[str, list[tuple[bytes, str]]]]:
    """Text fields (each given once) and uploads (bytes, the client's file name or "") of a multipart request."""
    ctype = request.headers.get("content-type", "").lower()
    # A urlencoded form cannot carry files, but it is still a form: let it through to "image is required".
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ServiceError(415, "send the request as multipart/form-data (an HTML form with file fields, or "
                                "curl -F image=@photo.jpg)")
    text: dict[str, str] = {}
    files: dict[str, list[tuple[bytes, str]]] = {}
    async with request.form(max_files=max_files, max_fields=_FORM_FIELDS, max_part_size=_FORM_FIELD_BYTES) as form:
        for key in form.keys():
            values = form.getlist(key)
            if key in file_fields:
                if not all(isinstance(v, UploadFile) for v in values):
                    raise ServiceError(422, f"{key} must be a file upload")
                files[key] = [(await v.read(), inputs.clean_name(v.filename)) for v in values]
            elif any(isinstance(v, UploadFile) for v in values):
                raise ServiceError(422, f"{key[:40]} is not a file field; files go in {' or '.join(file_fields)}")
            elif len(values) != 1:
                raise ServiceError(422, f"give {key[:40]} once, not {len(values)} times")
            else:
                text[key] = str(values[0])
    return text, files


def create_app(options: Optional[ServeOptions] = None) -> FastAPI:
    """The service as an ASGI app; ``app.state.service`` holds its lanes and job store (``close()`` stops them)."""
    options = (options or ServeOptions()).validate()
    service = Service(options)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    # No docs, no OpenAPI document: the public endpoints do not advertise the version (the README documents the API).
    app = FastAPI(title="atelier", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(_BodyLimit, limit=options.max_upload_bytes)
    app.add_middleware(_NoSniff)  # added last: the outermost, so 413s from the body limit carry it too

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "not found; the service answers /, /healthz, /v1/models, /v1/stylize and /v1/jobs"
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(AtelierError)
    async def atelier_error(_request: Request, exc: AtelierError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the service's log")

    # ---------------------------------------------------------------------------------------------- page

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                                           "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ----------------------------------------------------------------------------------------------- API

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        lanes = {lane.name: {"workers": lane.workers, "pending": lane.pending, "max_queue": lane.max_queue}
                 for lane in (service.lane, service.jobs.lane)}
        return {"status": "ok", "lanes": lanes, "jobs": service.jobs.counts()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        students, engines = await run_in_threadpool(lambda: (service.catalog.students(), service.catalog.engines()))
        job_options = inputs.describe_options(inputs.JOB_OPTIONS, options)
        for e in engines:
            e["options"] = job_options
        return {"students": students, "engines": engines,
                "student_options": inputs.describe_options(inputs.STUDENT_OPTIONS, options),
                "limits": {"max_upload_bytes": options.max_upload_bytes, "max_pixels": options.max_pixels,
                           "formats": [f.upper() for f in options.formats], "max_size": options.max_size,
                           "max_iterations": options.max_iterations, "max_styles": options.max_styles,
                           "request_timeout": options.request_timeout, "job_timeout": options.job_timeout}}

    @app.post("/v1/stylize")
    async def stylize(request: Request) -> Response:
        t0 = time.monotonic()
        text, files = await _read_form(request, ("image",), max_files=1 + _EXTRA_FILES)
        name = text.pop("model", "").strip()
        if not name:
            raise ServiceError(422, "model is required: the name of a student (GET /v1/models lists them)")
        key = await run_in_threadpool(service.catalog.student_key, name)
        values = inputs.parse_options(text, inputs.STUDENT_OPTIONS, options)
        if "image" not in files:
            raise ServiceError(422, "image is required: the photo to stylise, as a file field")
        if len(files["image"]) != 1:
            raise ServiceError(422, f"give one image per request, not {len(files['image'])}")
        data, filename = files["image"][0]
        label = inputs.upload_label("image", filename)
        inputs.check_image(data, label, options)
        service.lane.reserve()
        future = service.lane.start(service._run_student, key, data, filename, values)
        remaining = options.request_timeout - (time.monotonic() - t0)
        try:
            png, metadata = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.001, remaining))
        except TimeoutError:
            raise ServiceError(504, f"the request took longer than this service allows ({options.request_timeout:g} "
                                    "s); ask for a smaller size, or try again when the service is less busy") from None
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": 'inline; filename="stylized.png"', "Cache-Control": "no-store",
            "X-Atelier-Model": name, "X-Atelier-Seconds": f"{metadata.get('seconds', 0):.4f}"})

    @app.post("/v1/jobs", status_code=202)
    async def create_job(request: Request) -> JSONResponse:
        text, files = await _read_form(request, ("image", "style"), max_files=options.max_styles + 1 + _EXTRA_FILES)
        method = text.pop("method", "").strip() or "lite"
        engine = await run_in_threadpool(service.catalog.engine, method)
        values = inputs.parse_options(text, inputs.JOB_OPTIONS, options)
        if "iterations" not in values:  # the engine's own default, within this service's limit
            values["iterations"] = min(engine["defaults"].get("iterations", options.max_iterations),
                                       options.max_iterations)
        if "image" not in files:
            raise ServiceError(422, "image is required: the photo to stylise, as a file field")
        styles = files.get("style", [])
        if not styles:
            raise ServiceError(422, f"style is required: one to {options.max_styles} style images, as file fields")
        if len(styles) > options.max_styles:
            raise ServiceError(422, f"{len(styles)} style images; this service takes at most {options.max_styles}")
        if "style_weights" in values and len(values["style_weights"]) != len(styles):
            raise ServiceError(422, f"style_weights has {len(values['style_weights'])} values for {len(styles)} "
                                    "style images; give one weight per style")
        if len(files["image"]) != 1:
            raise ServiceError(422, f"give one image per job, not {len(files['image'])}")
        for field, (data, filename) in [("image", files["image"][0])] + [("style", s) for s in styles]:
            inputs.check_image(data, inputs.upload_label(field, filename), options)
        uploads = {"content": files["image"][0][0]}
        uploads.update({f"style-{i}": data for i, (data, _label) in enumerate(styles)})
        stored = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        names = {"content": files["image"][0][1], "styles": [filename for _data, filename in styles]}
        record = await run_in_threadpool(service.jobs.submit, method, stored, uploads, names)
        url = f"/v1/jobs/{record['id']}"
        return JSONResponse({"id": record["id"], "state": record["state"], "url": url, "result_url": f"{url}/result"},
                            status_code=202, headers={"Location": url})

    @app.get("/v1/jobs")
    async def list_jobs(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        return {"jobs": service.jobs.recent(limit)}

    def _job(job_id: str) -> dict:
        record = service.jobs.get(job_id)
        if record is None:
            raise ServiceError(404, f"no job {job_id[:40]!r} on this service (finished jobs are kept: the "
                                    f"{options.keep_jobs} most recent)")
        return record

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        record = _job(job_id)
        url = f"/v1/jobs/{record['id']}"
        record.update(url=url, result_url=f"{url}/result" if record["state"] == "done" else None)
        return record

    @app.get("/v1/jobs/{job_id}/result")
    async def job_result(job_id: str) -> Response:
        record = _job(job_id)
        if record["state"] == "failed":
            raise ServiceError(record.get("status") or 500, record.get("error") or "the job failed")
        if record["state"] != "done":
            fraction = (record.get("progress") or {}).get("fraction", 0.0)
            raise ServiceError(409, f"job {job_id} is {record['state']} ({fraction:.0%} done); poll /v1/jobs/"
                                    f"{job_id} until its state is done")
        path = service.jobs.result_path(record["id"])
        if not path.is_file():
            raise ServiceError(404, f"the result of job {job_id} is no longer kept")
        return FileResponse(path, media_type="image/png", filename=f"atelier-{job_id[:8]}.png",
                            content_disposition_type="inline")

    return app


# ------------------------------------------------------------------------------------------------ running


def torch_threads(options: ServeOptions, cores: Optional[int] = None) -> int:
    """Threads per computation: up to 2 x workers computations run at once (two lanes), and OpenMP threads beyond
    the cores do not just share them, they spin against each other (a 2-core machine with one busy core ran the
    student 8x slower with 2 threads than with 1)."""
    cores = cores or os.cpu_count() or 1
    return options.torch_threads or max(1, cores // (2 * options.workers))


def _set_torch_threads(options: ServeOptions) -> int:
    import torch

    threads = torch_threads(options)
    torch.set_num_threads(threads)
    return threads


def run_server(options: Optional[ServeOptions] = None) -> None:
    """Serve until interrupted (Ctrl-C): ``atelier serve`` calls this. Sets torch's thread count first."""
    import uvicorn

    options = (options or ServeOptions()).validate()
    threads = _set_torch_threads(options)
    app = create_app(options)
    service: Service = app.state.service
    print(f"atelier: serving on http://{options.host}:{options.port}/ ({options.workers} worker(s) per lane, "
          f"{threads} torch thread(s)); job results in {service.jobs.folder}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level, server_header=False)


@contextlib.contextmanager
def serve_in_thread(options: Optional[ServeOptions] = None, *, access_log: bool = False) -> Iterator[str]:
    """Run the service with uvicorn in a background thread on ``options.host`` (port 0: a free one); yields its base
    URL and stops it on exit. For tests and notebooks: torch's thread count is left as it is."""
    import uvicorn

    options = (options or ServeOptions(port=0)).validate()
    app = create_app(options)
    # Bind here, so port 0 gives a free port with no window for another process to take it.
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on", server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="atelier-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start (see the log above)")
            time.sleep(0.02)
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        yield f"http://{shown}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.state.service.close()
