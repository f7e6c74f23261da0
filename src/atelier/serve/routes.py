"""The page and the open endpoints: ``GET /``, ``/healthz``, ``/v1/models``, ``/v1/info`` and ``POST /v1/stylize``
(one pass: a student, or a one-pass method with style images); plus ``read_form``, the one reader of multipart
requests. ``add_routes(app, service)`` puts them on the app.

``GET /v1/info`` is ``about.collect(paths=False)`` cut to what a client may see: versions, devices and the
bundled models, with no filesystem path (no weights source, cache or model folder) and no weights read.

``POST /v1/stylize`` form fields: ``image`` (the photo, one file) and either ``model`` (a student's name) or
``method`` (a one-pass method's name; a student's name works there too), and the options the student or method reads
(``GET /v1/models`` lists them). ``style`` is what a student's ``style`` in the listing says:

- ``baked`` (a plain student): no ``style``; options ``size``, ``tile`` and ``strength`` (a blend of its picture
  with the photo);
- ``named`` (a style set): ``style`` as text, one style name per field (or several, comma-separated), blended by
  ``style_weights`` (one per name) and dialled by ``strength`` (0 = the photo, 1 = the full style);
- ``required`` (the arbitrary student, and every one-pass method): ``style`` as files, one per style image, as
  many as it takes (at most ``max_styles``).

Engines (optimisation methods) are refused here with 422 pointing at ``/v1/jobs``.
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

from ..methods import Method
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


async def read_form(request: Request, file_fields: tuple[str, ...], max_files: int, names: tuple[str, ...] = ()) \
        -> tuple[dict[str, Any], dict[str, list[tuple[bytes, str]]]]:
    """Text fields (each given once) and uploads (bytes, the client's file name or "") of a multipart request. A
    file field in ``names`` may come as text instead (style names): its values are then a list in the text."""
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
            if key in names and not any(isinstance(v, UploadFile) for v in values):
                text[key] = [str(v) for v in values]
            elif key in file_fields:
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


def style_bounds(method: Method, max_styles: int) -> tuple[int, int]:
    """(fewest, most) style images a request for ``method`` may upload, from its Method contract: none for a baked
    style; one to ``max_styles`` for a method that blends several (``blends_styles``, optimisation methods), else
    exactly one."""
    if method.style == "baked":
        return 0, 0
    return 1, (max_styles if getattr(method, "blends_styles", True) else 1)


def describe_method(entry: dict[str, Any], limits: Any) -> dict[str, Any]:
    """A one-pass method's public entry in ``/v1/models``: what it is, whether it runs here, its style images and
    the options a request may set (with the method's own defaults)."""
    method: Method = entry["method"]
    fewest, most = style_bounds(method, limits.max_styles)
    return {"name": entry["name"], "kind": method.kind, "description": entry["description"],
            "available": entry["available"], "reason": entry["reason"], "style": method.style,
            "strength": "strength" in method.options, "takes_style_images": most > 0, "min_styles": fewest,
            "max_styles": most,
            "options": inputs.describe_options(inputs.client_options(method), limits, entry.get("defaults"))}


def check_styles(method: Method, styles: list[tuple[bytes, str]], values: dict[str, Any], limits: Any) -> None:
    """Refuse (422) a number of style images ``method`` does not take, or style_weights that do not match them."""
    fewest, most = style_bounds(method, limits.max_styles)
    if most == 0 and styles:
        raise ServiceError(422, f"{method.name} has its style baked in: send no style file")
    if len(styles) < fewest:
        want = "one style image" if most == 1 else f"one to {most} style images"
        raise ServiceError(422, f"style is required: method {method.name} paints in the style of the image you give "
                                f"it; send {want} as style file field(s)")
    if len(styles) > most:
        if most < limits.max_styles:
            takes = "one style image" if most == 1 else f"at most {most} style images"
            raise ServiceError(422, f"method {method.name} takes {takes}, got {len(styles)}")
        raise ServiceError(422, f"{len(styles)} style images; this service takes at most {limits.max_styles}")
    if "style_weights" in values and len(values["style_weights"]) != len(styles):
        raise ServiceError(422, f"style_weights has {len(values['style_weights'])} values for {len(styles)} style "
                                "images; give one weight per style")


def describe_student(entry: dict[str, Any], limits: Any) -> dict[str, Any]:
    """A student's public entry in ``/v1/models``: its style (baked, named with its styles, or required), whether it
    reads ``strength``, how many styles a request gives, and the options a request may set."""
    method: Method = entry.pop("method")
    fewest, most = style_bounds(method, limits.max_styles)
    if method.style == "named":
        fewest, most = 1, len(entry["styles"])
    return {**entry, "kind": method.kind, "takes_style_images": method.style == "required",
            "min_styles": fewest, "max_styles": most,
            "options": inputs.describe_options(inputs.client_options(method), limits)}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def named_styles(model: str, known: list[str], given: list[str], values: dict[str, Any]) -> list[str]:
    """The style set's own names for the ``style`` text fields (matched as the library matches them: exactly, or
    ignoring case, spaces, ``-`` and ``_``); 422 for none, an unknown name, a repeat, or weights that do not fit."""
    listed = ", ".join(known)
    texts = [t.strip() for t in given]
    asked = [n.strip() for t in texts for n in ([t] if t in known else t.split(",")) if n.strip()]
    if not asked:
        raise ServiceError(422, f"style is required: {model} paints named styles; send one or more names as style "
                                f"fields (its styles: {listed})")
    chosen = []
    for name in asked:
        matches = [k for k in known if k == name] or [k for k in known if _key(k) == _key(name)]
        if len(matches) != 1:
            raise ServiceError(422, f"{model} has no style {name[:60]!r}; its styles: {listed}")
        if matches[0] in chosen:
            raise ServiceError(422, f"style {matches[0]} is given twice; give each style once (style_weights sets "
                                    "their shares)")
        chosen.append(matches[0])
    if "style_weights" in values and len(values["style_weights"]) != len(chosen):
        raise ServiceError(422, f"style_weights has {len(values['style_weights'])} values for {len(chosen)} styles; "
                                "give one weight per style")
    return chosen


def student_styles(model: str, method: Method, names: list[str], uploads: list[tuple[bytes, str]],
                   values: dict[str, Any], limits: Any) -> list[Any]:
    """What a student paints from, by its ``style``: style names (a style set), style uploads (the arbitrary
    student) or nothing (baked in); 422 for the other kind of ``style``."""
    if method.style == "named":
        if uploads:
            raise ServiceError(422, f"{model} paints named styles: send their names as text style fields, not style "
                                    f"images (its styles: {', '.join(method.style_names)})")
        return named_styles(model, method.style_names, names, values)
    if method.style == "baked" and (uploads or names):
        raise ServiceError(422, f"{model} is a student: its style is baked in, so send no style (or choose a style "
                                "set or a one-pass method, which take one)")
    if names:
        raise ServiceError(422, f"style must be a file upload: {model} paints in the style of the image you give it")
    check_styles(method, uploads, values, limits)
    return uploads


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
        catalog = service.catalog
        students, one_pass, engines = await run_in_threadpool(
            lambda: (catalog.students(), catalog.one_pass(), catalog.engines()))
        for e in engines:
            method = e.pop("method")
            e["strength"] = "strength" in method.options
            e["options"] = inputs.describe_options(inputs.job_options(method), options)
        return {"students": [describe_student(s, options) for s in students],
                "one_pass": [describe_method(m, options) for m in one_pass], "engines": engines,
                "student_options": inputs.describe_options(inputs.STUDENT_OPTIONS, options),
                "limits": {"max_upload_bytes": options.max_upload_bytes, "max_pixels": options.max_pixels,
                           "formats": [f.upper() for f in options.formats], "max_size": options.max_size,
                           "max_iterations": options.max_iterations, "max_styles": options.max_styles,
                           "request_timeout": options.request_timeout, "job_timeout": options.job_timeout}}

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        from ..about import public

        return await run_in_threadpool(public)

    @app.post("/v1/stylize")
    async def stylize(request: Request) -> Response:
        t0 = time.monotonic()
        text, files = await read_form(request, ("image", "style"), max_files=options.max_styles + 1 + EXTRA_FILES,
                                      names=("style",))
        names = [t for t in text.pop("style", []) if t.strip()]  # style names, for a style set
        model, name = text.pop("model", "").strip(), text.pop("method", "").strip()
        if model and name:
            raise ServiceError(422, "give model (a student) or method (a one-pass method), not both")
        if not model and not name:
            raise ServiceError(422, "model is required: the name of a student, or give method: a one-pass method's "
                                    "name, with its style images (GET /v1/models lists both)")
        method = await run_in_threadpool(service.catalog.one_pass_method, name) if name else None
        if method is None:  # a student, named as model (or as method)
            model = model or name
            student = await run_in_threadpool(service.catalog.student, model)
            baked = student["style"] == "baked"
            values = inputs.parse_options(text, inputs.client_options(student["method"]), options,
                                          who="a student" if baked else f"student {model}")
            styles = student_styles(model, student["method"], names, files.get("style", []), values, options)
        else:
            if names:
                raise ServiceError(422, f"style must be a file upload: method {method.name} paints in the style of "
                                        "the image you give it")
            values = inputs.parse_options(text, inputs.client_options(method), options, method=method,
                                          who=f"method {method.name}")
            styles = files.get("style", [])
            check_styles(method, styles, values, options)
        data, filename = _one_image(files)
        inputs.check_image(data, inputs.upload_label("image", filename), options)
        for style in styles:
            if not isinstance(style, str):  # an upload (a style set's styles are names)
                inputs.check_image(style[0], inputs.upload_label("style", style[1]), options)
        service.lane.reserve()
        if method is None:
            future = service.lane.start(service.run_student, model, student["key"], data, filename, values, styles)
            headers = {"X-Atelier-Model": model}
        else:
            future = service.lane.start(service.run_one_pass, method, data, filename, styles, values)
            headers = {"X-Atelier-Method": method.name}
        remaining = options.request_timeout - (time.monotonic() - t0)
        try:
            png, metadata = await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(0.001, remaining))
        except TimeoutError:
            raise ServiceError(504, f"the request took longer than this service allows ({options.request_timeout:g} "
                                    "s); ask for a smaller size, or try again when the service is less busy") from None
        return Response(png, media_type="image/png", headers={
            "Content-Disposition": 'inline; filename="stylized.png"', "Cache-Control": "no-store", **headers,
            "X-Atelier-Seconds": f"{metadata.get('seconds', 0):.4f}"})


def _one_image(files: dict[str, list[tuple[bytes, str]]]) -> tuple[bytes, str]:
    if "image" not in files:
        raise ServiceError(422, "image is required: the photo to stylise, as a file field")
    if len(files["image"]) != 1:
        raise ServiceError(422, f"give one image per request, not {len(files['image'])}")
    return files["image"][0]
