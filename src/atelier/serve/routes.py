"""The page and the open endpoints: ``GET /``, ``/healthz``, ``/v1/models`` and ``POST /v1/stylize`` (one pass of a
student); plus ``read_form``, the one reader of multipart requests. ``add_routes(app, service)`` puts them on the app.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from . import inputs
from .jobs import ServiceError

if TYPE_CHECKING:
    from .app import Service

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page runs only what the service itself serves; blob: for showing a result fetched as bytes.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
FORM_FIELDS = 64             # more fields than any request needs: a bound, not a feature
FORM_FIELD_BYTES = 64 * 1024  # one option's text (files are not held to it)
EXTRA_FILES = 16             # files past the expected count get a clear 422; far more stop the parser (400)


async def read_form(request: Request, file_fields: tuple[str, ...], max_files: int) \
        -> tuple[dict[str, str], dict[str, list[tuple[bytes, str]]]]:
    """Text fields (each given once) and uploads (bytes, the client's file name or "") of a multipart request."""
    ctype = request.headers.get("content-type", "").lower()
    # A urlencoded form cannot carry files, but it is still a form: let it through to "image is required".
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ServiceError(415, "send the request as multipart/form-data (an HTML form with file fields, or "
                                "curl -F image=@photo.jpg)")
    text: dict[str, str] = {}
    files: dict[str, list[tuple[bytes, str]]] = {}
    async with request.form(max_files=max_files, max_fields=FORM_FIELDS, max_part_size=FORM_FIELD_BYTES) as form:
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


def add_routes(app: FastAPI, service: "Service") -> None:
    options = service.options

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                                           "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

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
        text, files = await read_form(request, ("image",), max_files=1 + EXTRA_FILES)
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
        future = service.lane.start(service.run_student, name, key, data, filename, values)
        remaining = options.request_timeout - (time.monotonic() - t0)
        try:
            png, metadata = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.001, remaining))
        except TimeoutError:
            raise ServiceError(504, f"the request took longer than this service allows ({options.request_timeout:g} "
                                    "s); ask for a smaller size, or try again when the service is less busy") from None
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": 'inline; filename="stylized.png"', "Cache-Control": "no-store",
            "X-Atelier-Model": name, "X-Atelier-Seconds": f"{metadata.get('seconds', 0):.4f}"})
