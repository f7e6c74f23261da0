"""Optimisation jobs (the engines: methods of kind "optimisation"): ``POST /v1/jobs`` creates one and gives its
creator a token; every read of the job needs it. A job may set the engine options (``inputs.JOB_OPTIONS``) that its
engine reads; a student or one-pass method sent here is 422 pointing at ``/v1/stylize``.

Contract: ``POST /v1/jobs`` answers 202 ``{"id", "token", "state", "url", "result_url"}``. ``GET /v1/jobs/{id}`` and
``GET /v1/jobs/{id}/result`` need ``Authorization: Bearer <token>``; without it, or with another token, they answer
404 exactly as for an id that does not exist, so an id alone says nothing, not even that the job exists. There is
no listing of jobs (``GET /v1/jobs`` is 405: only POST is defined there). ``add_job_routes(app, service)`` puts the
routes on the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from . import inputs
from .jobs import ServiceError
from .routes import EXTRA_FILES, read_form

if TYPE_CHECKING:
    from .app import Service

PRIVATE = {"Cache-Control": "no-store"}  # a job's answers are its creator's: no cache keeps them


def bearer_token(request: Request) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def add_job_routes(app: FastAPI, service: "Service") -> None:
    options = service.options

    @app.post("/v1/jobs", status_code=202)
    async def create_job(request: Request) -> JSONResponse:
        text, files = await read_form(request, ("image", "style"), max_files=options.max_styles + 1 + EXTRA_FILES)
        method = text.pop("method", "").strip() or "lite"
        engine = await run_in_threadpool(service.catalog.engine, method)
        values = inputs.parse_options(text, inputs.job_options(engine["method"]), options, method=engine["method"],
                                      who=f"engine {method}")
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
        record, token = await run_in_threadpool(service.jobs.submit, method, stored, uploads, names)
        url = f"/v1/jobs/{record['id']}"
        return JSONResponse({"id": record["id"], "token": token, "state": record["state"], "url": url,
                             "result_url": f"{url}/result"},
                            status_code=202, headers={"Location": url, **PRIVATE})

    def _job(request: Request, job_id: str) -> dict:
        record = service.jobs.read(job_id, bearer_token(request))
        if record is None:  # one answer for an unknown id, no token and a wrong token
            raise ServiceError(404, f"no job {job_id[:40]!r} for this token on this service: send the token that "
                                    "POST /v1/jobs gave as the header Authorization: Bearer <token> (finished jobs "
                                    f"are kept: the {options.keep_jobs} most recent)")
        return record

    @app.get("/v1/jobs/{job_id}")
    async def get_job(request: Request, job_id: str) -> JSONResponse:
        record = _job(request, job_id)
        url = f"/v1/jobs/{record['id']}"
        record.update(url=url, result_url=f"{url}/result" if record["state"] == "done" else None)
        return JSONResponse(record, headers=PRIVATE)

    @app.get("/v1/jobs/{job_id}/result")
    async def job_result(request: Request, job_id: str) -> Response:
        record = _job(request, job_id)
        if record["state"] == "failed":
            status = record.get("status") or 500
            # A job cut off by a shutdown (503): it may be sent again once the lane has room.
            headers = {"Retry-After": str(service.jobs.lane.retry_after())} if status == 503 else None
            raise ServiceError(status, record.get("error") or "the job failed", headers)
        if record["state"] != "done":
            fraction = (record.get("progress") or {}).get("fraction", 0.0)
            raise ServiceError(409, f"job {job_id} is {record['state']} ({fraction:.0%} done); poll /v1/jobs/"
                                    f"{job_id} until its state is done")
        path = service.jobs.result_path(record["id"])
        if not path.is_file():
            raise ServiceError(404, f"the result of job {job_id} is no longer kept")
        return FileResponse(path, media_type="image/png", filename=f"atelier-{job_id[:8]}.png",
                            content_disposition_type="inline", headers=PRIVATE)

