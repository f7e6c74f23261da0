"""The HTTP service: every endpoint, every limit and its status code, JSON errors, model names never used as paths,
jobs kept across a restart, job progress, and a bounded load test against a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")
with warnings.catch_warnings():  # Starlette 1.x deprecates httpx in its test client; it still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import atelier.api as api
from atelier.config import ServeOptions
from atelier.errors import AtelierError
from atelier.images import METADATA_KEY, open_image
from atelier.methods.feedforward import BUNDLED_DIR
from atelier.serve import create_app, run_server, serve_in_thread

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


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


def make_client(tmp_path: Path, **options) -> TestClient:
    opts = ServeOptions(**{"results": str(tmp_path / "results"), "max_size": 256, **options})
    return TestClient(create_app(opts))


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


def wait_job(client, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


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
    assert set(students) == {"starry-tiny", "my-student"}
    assert students["starry-tiny"]["source"] == "bundled" and students["my-student"]["source"] == "models"
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
    assert [o["name"] for o in body["student_options"]] == ["size", "tile"]
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
    job_id = r.json()["id"]
    assert r.headers["location"] == f"/v1/jobs/{job_id}"
    seen, early_result = [], None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["progress"]:
            seen.append(job["progress"]["evaluations"])
        if job["state"] == "running" and early_result is None:
            early_result = client.get(f"/v1/jobs/{job_id}/result")
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.03)
    assert job["state"] == "done", job
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # it advanced, step by step, never backwards
    assert job["progress"]["evaluations"] == 8 and job["progress"]["fraction"] == 1.0
    assert job["progress"]["total"] == 8 and job["progress"]["loss"] > 0
    assert early_result is not None
    assert_json_error(early_result, 409, "poll")
    r = client.get(job["result_url"])
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
    listed = client.get("/v1/jobs").json()["jobs"]
    assert listed[0]["id"] == job_id and listed[0]["state"] == "done"


def test_restart_keeps_finished_jobs(tmp_path):
    results = tmp_path / "results"
    with make_client(tmp_path) as first:
        job_id = submit_job(first).json()["id"]
        job = wait_job(first, job_id)
        assert job["state"] == "done"
        png = first.get(f"/v1/jobs/{job_id}/result").content
    # A job the old process never finished, and a record cut off mid-write by a crash.
    ghost = "f" * 32
    (results / "jobs" / f"{ghost}.json").write_text(json.dumps(
        {"id": ghost, "state": "running", "method": "lite", "created": 1.0, "options": {}}))
    (results / "jobs" / f"{'e' * 32}.json").write_text('{"id": "eeee')
    (results / "uploads" / ghost).mkdir()
    with make_client(tmp_path) as second:
        again = second.get(f"/v1/jobs/{job_id}").json()
        assert again["state"] == "done" and again["result"] == job["result"]
        assert second.get(f"/v1/jobs/{job_id}/result").content == png
        lost = second.get(f"/v1/jobs/{ghost}").json()
        assert lost["state"] == "failed" and lost["status"] == 503 and "interrupted" in lost["error"]
        assert_json_error(second.get(f"/v1/jobs/{ghost}/result"), 503, "interrupted")
        assert_json_error(second.get(f"/v1/jobs/{'e' * 32}"), 404)
    assert json.loads((results / "jobs" / f"{ghost}.json").read_text())["state"] == "failed"  # written back
    assert not (results / "uploads" / ghost).exists()


def test_old_finished_jobs_are_pruned(tmp_path):
    with make_client(tmp_path, keep_jobs=1) as c:
        first = submit_job(c).json()["id"]
        assert wait_job(c, first)["state"] == "done"
        second = submit_job(c).json()["id"]
        assert wait_job(c, second)["state"] == "done"
        assert_json_error(c.get(f"/v1/jobs/{first}"), 404)
        assert c.get(f"/v1/jobs/{second}/result").status_code == 200
    names = sorted(p.name for p in (tmp_path / "results" / "jobs").iterdir())
    assert names == [f"{second}.json", f"{second}.png"]


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
    assert_json_error(client.delete("/v1/models"), 405)
    assert_json_error(client.get("/v1/jobs", params={"limit": "abc"}), 422, "limit")
    assert_json_error(client.get("/v1/jobs", params={"limit": "0"}), 422, "limit")


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
        assert c.get("/v1/jobs").json()["jobs"] == []  # nothing was queued


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
        assert len(c.get("/v1/jobs").json()["jobs"]) == 1  # the refused job left no record
        release.set()
        done = wait_job(c, held.json()["id"])
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
        job = wait_job(c, r.json()["id"], timeout=30)
        assert time.monotonic() - t0 < 15
    assert job["state"] == "failed" and job["status"] == 504, job
    assert "time limit of 0.5 s" in job["error"]
    assert 0 < job["progress"]["evaluations"] < 5000
    with make_client(tmp_path) as c:  # the failure is kept like any finished job
        assert_json_error(c.get(f"/v1/jobs/{job['id']}/result"), 504, "time limit")


def test_job_that_fails_in_the_engine_keeps_its_error(client):
    r = client.post("/v1/jobs", data={"size": "64", "iterations": "5"}, files=[
        ("image", ("photo.png", image_bytes(), "image/png")),
        ("style", ("broken.png", image_bytes(64, 64, noise=True)[:400], "image/png"))])
    assert r.status_code == 202  # the header is fine: the damage shows when the worker decodes it
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "failed" and job["status"] == 400 and "broken.png" in job["error"]
    assert_json_error(client.get(f"/v1/jobs/{job['id']}/result"), 400, "truncated or corrupt")


# ------------------------------------------------------------------------------------------- load test


def test_load_300_requests_8_concurrent_real_server(tmp_path):
    """A bounded load test over real HTTP: 300 requests, 8 at a time, the tiny student at 64 px; no errors."""
    opts = ServeOptions(port=0, results=str(tmp_path / "results"), workers=2, max_queue=16)
    payload = image_bytes(96, 64)
    statuses: list[int] = []
    sizes: set = set()
    lock = threading.Lock()
    with serve_in_thread(opts) as url, httpx.Client(base_url=url, timeout=30) as http:
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
        job = wait_job(c, r.json()["id"])
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
