"""The HTTP service: a FastAPI app over ``atelier.api``, its limits, its error shape, and running it with uvicorn.

``create_app(options)`` assembles the app: the gate (``security``: Host allowlist, anti-CSRF check on writes, body
limit, nosniff), the open routes (``routes``: page, health, models, one-pass stylize) and the job routes
(``routes_jobs``). Endpoints::

    GET  /                      the web page (static/index.html; nothing loaded from elsewhere)
    GET  /healthz               {"status": "ok", ...} with the lanes' load
    GET  /v1/info               versions (atelier, python, torch, numpy, ...), devices and the bundled models; no
                                filesystem paths
    GET  /v1/models             students (bundled + --models DIR: each with its style, baked, named with its
                                style names, or required), one-pass methods and engines, each with the options a
                                request may set, their defaults and bounds; the limits
    POST /v1/stylize            multipart, one pass -> image/png, either
                                  image, model=<student>, [size], [tile], [strength]  (a student: its style is
                                    baked in; strength blends its picture with the photo), or
                                  image, model=<style set>, style=<name> (1..its styles, text), [style_weights],
                                    [strength], [size], [tile], or
                                  image, model=<arbitrary student> or method=<one-pass method>, style (1..its most,
                                    files), [the options it reads]
    POST /v1/jobs               multipart: image, style (1..max_styles), [method=lite], [options, strength too]
                                -> 202 {"id", "token", ...}; the token is shown this once

Each method is served by its kind (``Method.kind``), generically: students and one-pass methods on /v1/stylize,
optimisation methods (engines) on /v1/jobs. A method registered with kind "one-pass" is listed and served with the
style images and options its Method declares, with nothing in the service naming it.
    GET  /v1/jobs/{id}          (token) the job's record: state queued|running|done|failed, progress, error
    GET  /v1/jobs/{id}/result   (token) image/png once done; a failed job answers with its own status and error

Every request must name an accepted host (``ServeOptions.allowed_hosts``). Every write (POST, and any method but
GET, HEAD and OPTIONS) must carry ``X-Atelier-Request: 1`` and, if it has an ``Origin``, come from the service's own
origin. Job reads need ``Authorization: Bearer <token>``. There is no listing of jobs.

Every error is JSON ``{"error": "<one line>"}``, FastAPI's own (404, 405, validation) included. Status codes:

    400  a Host header that is not an accepted host name; an upload that is truncated or corrupt; a malformed
         multipart body, or one with far too many parts
    403  a write without the X-Atelier-Request header, or from another origin
    404  unknown path; a job id that is unknown, or read without its token or with another one (the same answer)
    405  a method a path does not take (GET /v1/jobs: jobs are not listed)
    409  the result of a job that has not finished
    413  request body over max_upload_bytes (checked before the body is read), image over max_pixels (from its header)
    415  an upload that is not one of ``formats`` (identified from its bytes), a body that is not multipart/form-data
    422  unknown option, model or method, an option the chosen method does not read, a method sent to the other
         endpoint (an engine to /v1/stylize, a student or one-pass method to /v1/jobs), a model folder that does not
         work, malformed value, value past a limit (size, iterations, number of styles), missing field (a style
         image for a method that needs one, a style name for a style set), a style image for a student that does
         not take one, a style set's unknown style name, method or student unavailable here
    500  a bug (the traceback goes to the log, not to the client)
    503  a lane's queue is full; a job cut off by a shutdown. Always with ``Retry-After``
    504  a /v1/stylize request not answered within request_timeout; a job that ran past job_timeout (the job fails,
         and its result answers 504)

Two lanes of ``workers`` threads each keep a quick one-pass request from waiting behind a long optimisation: one
for ``/v1/stylize``, one for jobs. A forward pass cannot be interrupted, so a request past its time limit gets its
504 at once while the pass finishes in the background, still counted in the queue.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL.PngImagePlugin import PngInfo
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import api
from ..options import ServeOptions
from ..errors import AtelierError
from ..images import METADATA_KEY
from . import inputs
from .catalog import Catalog
from .jobs import JobStore, Lane, QueueFull, ServiceError
from .routes import add_routes
from .routes_jobs import add_job_routes
from .security import BodyLimit, HostAllowlist, NoSniff, WriteGuard, error_response

log = logging.getLogger("atelier.serve")


_PREFIXED_PATH = re.compile(r"^([\w.+-]+:)(/(?!/).*)$")  # "label:/a/path" (not a URL's "scheme://")


def public_metadata(value: Any) -> Any:
    """Metadata as clients may see it: no server paths. An absolute path (or "label:/a/path") keeps only its last
    part; the student's model folder is left out altogether."""
    if isinstance(value, dict):
        return {k: public_metadata(v) for k, v in value.items() if k != "model_folder"}
    if isinstance(value, (list, tuple)):
        return [public_metadata(v) for v in value]
    if isinstance(value, str):
        if value.startswith(("/", "~")) and len(value) > 1:
            return os.path.basename(value.rstrip("/")) or value
        m = _PREFIXED_PATH.match(value)
        if m:
            return m.group(1) + (os.path.basename(m.group(2).rstrip("/")) or "")
    return value


def png_bytes(image: Any, metadata: dict) -> bytes:
    """A PIL image as PNG bytes carrying ``metadata`` (as ``atelier.images`` writes it)."""
    buf = io.BytesIO()
    info = PngInfo()
    info.add_text(METADATA_KEY, json.dumps(metadata))
    # compress_level 1: at 512 px level 6 takes longer than the student itself, for 10% fewer bytes.
    image.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def default_results_dir() -> Path:
    """Where job records and results go without --results (the same cache root as the VGG19 weights)."""
    root = os.environ.get("ATELIER_CACHE") or Path.home() / ".cache" / "atelier"
    return Path(root).expanduser() / "serve-jobs"


# ----------------------------------------------------------------------------------------------- service


class Service:
    """What one app instance holds: its options, the model catalogue, the two lanes and the job store."""

    def __init__(self, options: ServeOptions):
        self.options = options
        self.catalog = Catalog(options.models)
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

    def run_student(self, name: str, key: Any, data: bytes, filename: str, options: dict[str, Any],
                    styles: Optional[list[Any]] = None) -> tuple[bytes, dict]:
        """One pass of a student; ``styles``: a style set's names, or the arbitrary student's style uploads."""
        try:
            model = api.load_model(key)
        except AtelierError as e:  # a folder damaged past what the listing checks: unlisted from now on, 422
            raise self.catalog.load_failed(name, key, e) from None
        max_pixels = self.options.max_pixels
        image = inputs.decode(data, inputs.upload_label("image", filename), max_pixels)
        styles = styles or []
        uploads = [s for s in styles if not isinstance(s, str)]
        style = [s if isinstance(s, str) else inputs.decode(s[0], inputs.upload_label("style", s[1]), max_pixels)
                 for s in styles]
        result = api.stylize(image, style or None, model=model, max_pixels=self._output_pixels(), **options)
        metadata = public_metadata(result.metadata)  # no server paths out
        metadata["content"] = filename
        if uploads:
            metadata["styles"] = [upload_name for _d, upload_name in uploads]
        return png_bytes(result.image, metadata), metadata

    def run_one_pass(self, method: Any, data: bytes, filename: str, styles: list[tuple[bytes, str]],
                     options: dict[str, Any]) -> tuple[bytes, dict]:
        """One pass of a style-conditioned method (a ``Method`` object) over the upload and its style images."""
        max_pixels = self.options.max_pixels
        content = inputs.decode(data, inputs.upload_label("image", filename), max_pixels)
        style_images = [inputs.decode(d, inputs.upload_label("style", name), max_pixels) for d, name in styles]
        result = api.stylize(content, style_images, method, max_pixels=self._output_pixels(), **options)
        metadata = public_metadata(result.metadata)
        metadata.update(content=filename, styles=[name for _d, name in styles])
        return png_bytes(result.image, metadata), metadata

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
        metadata = dict(public_metadata(result.metadata), content=names.get("content", ""), styles=labels,
                        job=record["id"])
        return result.tensor, metadata


# -------------------------------------------------------------------------------------------------- app


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "not found; the service answers /, /healthz, /v1/models, /v1/info, /v1/stylize and /v1/jobs"
        elif exc.status_code == 405 and request.url.path.rstrip("/") == "/v1/jobs":
            message = ("jobs are not listed: POST /v1/jobs creates one, and GET /v1/jobs/{id} with its token reads "
                       "it")
        elif exc.status_code == 405:
            message = f"{request.method[:10]} is not allowed on {request.url.path[:80]}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, str(exc), exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(AtelierError)
    async def atelier_error(_request: Request, exc: AtelierError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); see the service's log")


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
    # Each add_middleware wraps the app so far, so the last added runs first: NoSniff (on every answer, the gate's
    # refusals too), then the Host check, then the check on writes, then the body limit, then the routes.
    app.add_middleware(BodyLimit, limit=options.max_upload_bytes)
    app.add_middleware(WriteGuard)
    app.add_middleware(HostAllowlist, hosts=options.accepted_hosts())
    app.add_middleware(NoSniff)
    _add_error_handlers(app)
    add_routes(app, service)
    add_job_routes(app, service)
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
    hosts = options.accepted_hosts()
    shown = "any host name" if hosts is None else "host names " + ", ".join(sorted(hosts))
    print(f"atelier: serving on http://{options.host}:{options.port}/ ({options.workers} worker(s) per lane, "
          f"{threads} torch thread(s)); job results in {service.jobs.folder}; answering to {shown}",
          file=sys.stderr, flush=True)
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
