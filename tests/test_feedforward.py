"""Student inference (methods/feedforward.py): model folders, bundled names, tiling, the API, the CLI and the bench."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import atelier
from atelier import api, registry
from atelier.folders import save_model_folder
from atelier.cli import main
from atelier.errors import AtelierError
from atelier.images import read_metadata, save_image
from atelier.methods import feedforward
from atelier.methods.feedforward import StudentModel, list_students, resolve_model
from atelier.tiling import tile_starts
from atelier.nets import build_generator, generator_arch
from atelier.options import GENERATORS
from atelier.nets.blocks import Generator
from conftest import make_image

SMALL = {"base": 4, "width": 8, "blocks": 1}


def make_student(folder: Path, seed: int = 0, arch: dict | None = None, name: str | None = "starry",
                 dtype: torch.dtype | None = None, kind: str = "student") -> Path:
    torch.manual_seed(seed)
    g = build_generator("tiny", arch or SMALL)
    config = {"kind": kind, "architecture": {"generator": "tiny", "args": generator_arch(g)},
              "style": "starry-night.jpg", "training": {"steps": 0}}
    if name is not None:
        config["name"] = name
    return save_model_folder(folder, g.state_dict(), config, dtype=dtype)


@pytest.fixture
def student(tmp_path) -> Path:
    return make_student(tmp_path / "student")


@pytest.fixture(autouse=True)
def no_bundled(tmp_path_factory, monkeypatch):
    """Tests see an empty bundled folder unless they fill one (the real package ships none yet)."""
    monkeypatch.setattr(feedforward, "BUNDLED_DIR", tmp_path_factory.mktemp("bundled"))


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------ model folders


def test_round_trip_rebuilds_from_config_and_matches(tmp_path):
    torch.manual_seed(3)
    g = build_generator("tiny", SMALL).eval()
    folder = save_model_folder(tmp_path / "m", g.state_dict(), {
        "kind": "student", "architecture": {"generator": "tiny", "args": generator_arch(g)}, "name": "wave"})
    m = StudentModel.from_folder(folder)
    assert m.name == "wave" and m.folder == folder and m.config["kind"] == "student"
    assert m.identity.startswith("student:wave(sha256:") and len(m.identity.split("sha256:")[1]) == 12 + 1
    assert m.params == sum(p.numel() for p in g.parameters())
    assert not m.generator.training and not any(p.requires_grad for p in m.generator.parameters())
    x = make_image(37, 53, 1)
    with torch.no_grad():
        want = g(x)
    assert torch.equal(m.run(x), want)


def test_fp16_storage_is_widened_and_name_defaults_to_folder(tmp_path):
    folder = make_student(tmp_path / "half-model", name=None, dtype=torch.float16)
    m = StudentModel.from_folder(folder)
    assert m.name == "half-model" and next(m.generator.parameters()).dtype == torch.float32
    torch.manual_seed(0)
    g = build_generator("tiny", SMALL).eval()
    x = make_image(24, 24, 2)
    torch.testing.assert_close(m.run(x), g(x).detach(), atol=2e-3, rtol=0)


def test_load_model_caches_and_reloads_a_rewritten_folder(tmp_path):
    folder = make_student(tmp_path / "m", seed=0)
    a = api.load_model(folder)
    assert api.load_model(str(folder)) is a and api.load_model(a) is a
    assert atelier.load_model is api.load_model
    make_student(folder, seed=1)  # rewritten in place: new weights file, new mtime
    b = api.load_model(folder)
    assert b is not a and b.identity != a.identity


def _damage(tmp_path: Path, case: str) -> Path:
    folder = make_student(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    if case == "missing":
        return tmp_path / "nope"
    if case == "a-file":
        (tmp_path / "f.txt").write_text("x")
        return tmp_path / "f.txt"
    if case == "other-kind":
        return make_student(tmp_path / "enc", kind="lite_encoder")
    if case == "newer-format":
        config["format_version"] = 99
    elif case == "unknown-generator":
        config["architecture"]["generator"] = "vangogh"
    elif case == "no-generator":
        del config["architecture"]["generator"]
    elif case == "args-not-a-dict":
        config["architecture"]["args"] = [1, 2]
    elif case == "bad-arg":
        config["architecture"]["args"]["depth"] = 3
    elif case == "wrong-shapes":
        config["architecture"]["args"]["width"] = 12
    elif case == "corrupt-weights":
        w = folder / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])
    elif case == "missing-weights":
        (folder / "model.safetensors").unlink()
    elif case == "non-finite-weights":
        torch.manual_seed(0)
        g = build_generator("tiny", SMALL)
        sd = g.state_dict()
        sd["stem.0.weight"][0, 0, 0, 0] = float("nan")
        save_model_folder(folder, sd, {"kind": "student", "architecture": {"generator": "tiny", "args": SMALL}})
        return folder
    elif case == "broken-json":
        (folder / "config.json").write_text("{not json")
        return folder
    else:
        raise AssertionError(case)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


BAD_FOLDERS = ["missing", "a-file", "other-kind", "newer-format", "unknown-generator", "no-generator",
               "args-not-a-dict", "bad-arg", "wrong-shapes", "corrupt-weights", "missing-weights",
               "non-finite-weights", "broken-json"]


@pytest.mark.parametrize("case", BAD_FOLDERS)
def test_bad_model_folders_give_one_line_errors(case, tmp_path):
    folder = _damage(tmp_path, case)
    with pytest.raises(AtelierError) as e:
        api.load_model(folder)
    msg = one_line_error(e)
    assert str(folder.name) in msg or case == "other-kind" and "student" in msg, msg


# ------------------------------------------------------------------------------------------ bundled names


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """A package-like tree: pkg/weights/{starry (student), enc (lite encoder), .tmp-thing} and pkg/x (a student
    right next to the bundled folder, which no name may reach)."""
    pkg = tmp_path / "pkg"
    weights = pkg / "weights"
    weights.mkdir(parents=True)
    make_student(weights / "starry", name="starry")
    make_student(weights / "enc", kind="lite_encoder")
    make_student(weights / ".starry.abc.tmp")
    make_student(pkg / "x", name="x")
    monkeypatch.setattr(feedforward, "BUNDLED_DIR", weights)
    elsewhere = tmp_path / "elsewhere" / "deep"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    return weights


def test_bundled_students_are_listed_and_loaded_by_name(bundled):
    assert [s["name"] for s in list_students()] == ["starry"]
    assert "starry-night.jpg" in list_students()[0]["description"]
    assert resolve_model("starry") == bundled / "starry"
    m = api.load_model("starry")
    assert m.name == "starry" and m.folder == bundled / "starry"
    methods = {d["name"]: d for d in api.list_methods()}
    assert methods["starry"]["kind"] == "student" and methods["starry"]["available"] is True
    assert methods["lite"]["kind"] == "optimisation"
    r = api.stylize(make_image(20, 30, 1), method="starry", size=30)  # a bundled name works as a method too
    assert r.method == "student:starry"


@pytest.mark.parametrize("name", ["../x", "x", "enc", ".starry.abc.tmp", "..", "", "weights/../x"])
def test_names_outside_the_listing_are_refused(bundled, name):
    with pytest.raises(AtelierError) as e:
        api.load_model(name)
    one_line_error(e)


# ------------------------------------------------------------------------------------------------- tiling


class Pointwise(Generator):
    """A 1x1-conv net: each output pixel depends on its input pixel only, so tiling cannot change anything."""

    name = "pointwise"
    pad_multiple = 4
    min_size = 8

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1)
        nn.init.normal_(self.mix.weight, 0.0, 1.0)
        nn.init.normal_(self.mix.bias, 0.0, 0.3)

    def core(self, x):
        return self.mix(x)


def as_model(g: nn.Module) -> StudentModel:
    return StudentModel(g, {"kind": "student"}, Path("."), f"student:{g.name}(test)", g.name)


@pytest.mark.parametrize("tile,overlap", [(64, 16), (50, 32), (100, 0), (33, 32), (8, 0), (97, 40)])
def test_tiling_a_pointwise_net_gives_the_one_pass_output_exactly(tile, overlap):
    torch.manual_seed(0)
    m = as_model(Pointwise())
    x = torch.rand(2, 3, 131, 203)
    assert torch.equal(m.run(x, tile=tile, overlap=overlap), m.run(x))


@pytest.mark.parametrize("n,tile,overlap", [(100, 64, 16), (203, 50, 32), (1000, 512, 32), (513, 512, 32),
                                            (64, 64, 32), (9, 8, 0), (300, 33, 32)])
def test_tile_starts_cover_the_axis_with_enough_overlap(n, tile, overlap):
    starts = tile_starts(n, tile, overlap)
    size = min(tile, n)
    assert starts[0] == 0 and starts[-1] + size == n
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + size - b >= overlap


def test_tiles_never_exceed_the_tile_size():
    torch.manual_seed(0)
    g = Pointwise()
    seen = []
    g.register_forward_pre_hook(lambda mod, inp: seen.append(tuple(inp[0].shape[-2:])))
    as_model(g).run(torch.rand(1, 3, 300, 170), tile=96, overlap=24)
    assert len(seen) == 4 * 3 and max(max(s) for s in seen) <= 96


def _scaled_tiny() -> StudentModel:
    """The tiny generator with weights large enough that its output varies (pix2pix's N(0, 0.02) gives a nearly
    flat grey at init, which would make any comparison vacuous): half of a unit-gain init."""
    torch.manual_seed(0)
    g = build_generator("tiny", {"base": 8, "width": 16, "blocks": 2})
    for mod in g.modules():
        if isinstance(mod, nn.Conv2d):
            fan = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            nn.init.normal_(mod.weight, 0.0, 0.5 / fan ** 0.5)
    return as_model(g)


def _photo(h: int, w: int) -> torch.Tensor:
    small = torch.rand(1, 3, h // 16, w // 16, generator=torch.Generator().manual_seed(1))
    return nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def test_tiling_a_real_generator_stays_close_to_one_pass():
    # Every generator normalises each map with its own statistics (instance norm), and a tile's statistics are
    # not the whole image's, so tiles cannot match one pass exactly. With tiles 3/4 of the image's side the
    # mean difference stays under one grey level and the 99th percentile under 6 (measured: 0.6 and 3.6), while
    # the output itself varies by about 16 grey levels (std).
    m = _scaled_tiny()
    x = _photo(256, 384)
    one = m.run(x)
    assert one.std() > 10 / 255
    diff = (m.run(x, tile=192, overlap=48) - one).abs()
    assert diff.mean() < 1 / 255
    assert diff.flatten().quantile(0.99) < 6 / 255


def test_blending_leaves_no_seam_where_hard_cuts_do():
    # The largest column-to-column (and row-to-row) change of the tiled output beyond the one-pass output's own
    # change there, in units of the one-pass output's mean change. Abutting tiles (overlap 0 at 128 on 256x384:
    # cuts at rows 128 and columns 128, 256) show steps of about 7; tiles blended over 64 px show none (0.1).
    m = _scaled_tiny()
    x = _photo(256, 384)
    one = m.run(x)

    def excess(y):
        worst = 0.0
        for dim in (-1, -2):
            jump = lambda t: t.diff(dim=dim).abs().mean(dim=(0, 1, -1 if dim == -2 else -2))  # noqa: E731
            ref = jump(one)
            worst = max(worst, float(((jump(y) - ref) / ref.mean()).max()))
        return worst

    assert excess(m.run(x, tile=128, overlap=0)) > 3
    assert excess(m.run(x, tile=128, overlap=64)) < 0.5


def test_small_images_take_one_pass_even_when_tiled():
    m = _scaled_tiny()
    x = _photo(64, 96)
    assert torch.equal(m.run(x, tile=128), m.run(x))


@pytest.mark.parametrize("tile,overlap", [(16, 32), (32, 32), (4, 0), (-1, 0), (True, 0), (64, -1), (2.5, 0)])
def test_bad_tiles_give_clear_errors(tile, overlap):
    m = _scaled_tiny()
    with pytest.raises(AtelierError) as e:
        m.run(_photo(64, 64), tile=tile, overlap=overlap)
    msg = one_line_error(e)
    assert "tile" in msg


def test_tile_smaller_than_the_nets_minimum_names_it():
    m = _scaled_tiny()
    with pytest.raises(AtelierError, match="minimum input"):
        m.run(_photo(64, 64), tile=6, overlap=2)
    with pytest.raises(AtelierError, match="overlap"):
        m.run(_photo(64, 64), tile=20, overlap=32)


# ---------------------------------------------------------------------------------------------------- API


def test_stylize_with_model_and_with_method_student(student, tmp_path):
    content = tmp_path / "photo.png"
    save_image(make_image(30, 45, 1), content)
    r = api.stylize(content, model=student, size=40)
    assert r.tensor.shape == (1, 3, 27, 40) and r.method == "student:starry"
    assert r.evaluations == 0 and r.optimizer_steps == 0 and r.history == [] and r.seconds >= 0
    md = r.metadata
    assert md["method"] == "student:starry" and md["weights"] == api.load_model(student).identity
    assert md["random_weights"] is False and md["content"] == "photo.png" and md["tile"] == 0
    assert md["model_folder"] == str(student) and md["atelier_version"] == atelier.__version__
    m = api.load_model(student)
    r2 = api.stylize(content, method=m, size=40)
    assert torch.equal(r2.tensor, r.tensor)  # a loaded model is the same method as its folder
    r3 = api.stylize(content, model=m, size=40, tile=36)
    assert r3.metadata["tile"] == 36 and (r3.tensor - r.tensor).abs().max() < 0.05
    out = r.save(tmp_path / "out.png")
    assert read_metadata(out)["weights"] == m.identity


@pytest.mark.parametrize("kwargs,match", [
    ({"tile": -1}, "tile must be"), ({"tile": "big"}, "tile must be"), ({"size": 0}, "size"),
    ({"no_such_option": 1}, "no_such_option"), ({"device": "tpu"}, "device"),
    # Issue 12: a student used to ignore these silently; options that do not apply are refused, naming the option.
    ({"iterations": 7}, "iterations does not apply to student method"),
    ({"style_weight": 3.0}, "style_weight does not apply to student method"),
    ({"preserve_color": "luminance"}, "preserve_color does not apply to student method"),
])
def test_stylize_student_refuses_bad_options(student, kwargs, match):
    with pytest.raises(AtelierError, match=match) as e:
        api.stylize(make_image(20, 20, 1), model=student, **kwargs)
    one_line_error(e)


def test_optimisation_methods_still_need_a_style_and_refuse_tiles(student):
    with pytest.raises(AtelierError, match="a style image is needed for method lite"):
        api.stylize(make_image(20, 20, 1))
    with pytest.raises(AtelierError, match="tile does not apply to optimisation method lite"):
        api.stylize(make_image(20, 20, 1), make_image(20, 20, 2), tile=64)
    other = make_student(student.parent / "other", seed=5)
    with pytest.raises(AtelierError, match="not both"):
        api.stylize(make_image(20, 20, 1), method=api.load_model(student), model=other)
    with pytest.raises(AtelierError, match="baked in"):  # issue 12: a style image given to a student is refused
        api.stylize(make_image(20, 20, 1), make_image(20, 20, 2), model=student)


def test_generators_are_one_catalogue():
    # The registry is the catalogue; the training option's choices name the same generators, in the same order.
    assert registry.names("generator") == list(GENERATORS)
    for name in registry.names("generator"):
        assert build_generator(name).name == name
    with pytest.raises(AtelierError, match="unknown generator"):
        build_generator("vangogh")


# ---------------------------------------------------------------------------------------------------- CLI


def cli(*args) -> int:
    return main(["stylize", *map(str, args)])


def test_cli_single_image_with_a_model(student, tmp_path, capsys):
    content = tmp_path / "photo.jpg"
    save_image(make_image(40, 60, 1), content)
    out = tmp_path / "out.png"
    assert cli(content, "--model", student, "-o", out, "--size", "48", "-q") == 0
    assert "student:starry" in capsys.readouterr().out
    md = read_metadata(out)
    assert md["method"] == "student:starry" and md["content"] == "photo.jpg" and md["tile"] == 0
    out2 = tmp_path / "tiled.png"
    assert cli(content, "--model", student, "-o", out2, "--size", "96", "--tile", "48") == 0
    assert "48 px tiles" in capsys.readouterr().out
    assert read_metadata(out2)["tile"] == 48
    # Issue 12: --model silently ignored --style, --iterations, --style-weight and --preserve-color; now each is
    # refused with one line naming the flag, and nothing is written.
    for extra, flag in ((["--style", content], "baked in"), (["--iterations", "5"], "--iterations does not apply"),
                        (["--style-weight", "3"], "--style-weight does not apply"),
                        (["--preserve-color", "luminance"], "--preserve-color does not apply")):
        out3 = tmp_path / "refused.png"
        assert cli(content, "--model", student, "-o", out3, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert flag in err and "\n" not in err and not out3.exists()


@pytest.mark.parametrize("case", ["no-style-no-model", "model-and-method", "missing-model", "tile-below-overlap",
                                  "tile-with-lite", "negative-tile", "output-is-input", "model-of-another-kind"])
def test_cli_bad_input_exits_2_with_one_line(case, student, tmp_path, capsys):
    content = tmp_path / "photo.png"
    save_image(make_image(40, 60, 1), content)
    out = tmp_path / "out.png"
    args = [content, "-o", out, "--size", "64", "-q"]
    if case == "no-style-no-model":
        pass
    elif case == "model-and-method":
        args += ["--model", student, "--method", "gatys"]
    elif case == "missing-model":
        args += ["--model", tmp_path / "nope"]
    elif case == "tile-below-overlap":
        args += ["--model", student, "--tile", "16"]
    elif case == "tile-with-lite":
        args += ["--style", content, "--tile", "64", "--iterations", "1"]
    elif case == "negative-tile":
        args += ["--model", student, "--tile", "-5"]
    elif case == "output-is-input":
        args = [content, "-o", content, "--model", student, "-q"]
        out = tmp_path / "never"
    elif case == "model-of-another-kind":
        args += ["--model", make_student(tmp_path / "enc", kind="lite_encoder")]
    before = content.read_bytes()
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error: ") and "\n" not in err and "Traceback" not in err, err
    assert not out.exists() and content.read_bytes() == before


@pytest.fixture
def photos(tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    save_image(make_image(30, 40, 1), d / "a.png")
    save_image(make_image(40, 30, 2), d / "a.webp")  # same stem as a.png: both kept, under their full names
    save_image(make_image(32, 32, 3), d / "b.jpg")
    (d / "broken.png").write_text("not a picture")
    (d / "notes.txt").write_text("not an image extension: not even looked at")
    (d / "sub").mkdir()
    save_image(make_image(32, 32, 4), d / "sub" / "c.png")  # not recursive
    return d


def test_cli_folder_mode_with_a_model(student, photos, tmp_path, capsys):
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    out = tmp_path / "results"
    assert cli(photos, "--model", student, "-o", out, "--size", "32") == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.png.png", "a.webp.png", "b.png"]
    assert "skipped broken.png" in captured.err and "skipped 1 unreadable" in captured.out
    assert "wrote 3 image(s)" in captured.out
    assert read_metadata(out / "b.png")["content"] == "b.jpg"
    assert read_metadata(out / "b.png")["method"] == "student:starry"
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    assert cli(photos, "--model", student, "-o", out, "--size", "32", "-q") == 0  # a rerun overwrites outputs


def test_cli_folder_mode_with_an_optimisation_method(photos, tmp_path):
    style = tmp_path / "style.png"
    save_image(make_image(32, 32, 9), style)
    out = tmp_path / "results"
    assert cli(photos, "--style", style, "-o", out, "--size", "24", "--iterations", "1", "--scales", "none",
               "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png.png", "a.webp.png", "b.png"]
    assert read_metadata(out / "b.png")["method"] == "lite"


@pytest.mark.parametrize("case", ["out-is-in", "out-is-image-name", "out-is-a-file", "nothing-readable", "empty",
                                  "no-style"])
def test_cli_folder_mode_refusals(case, student, photos, tmp_path, capsys):
    out = tmp_path / "results"
    model = ["--model", student]
    folder = photos
    if case == "out-is-in":
        out = photos
    elif case == "out-is-image-name":
        out = tmp_path / "result.png"
    elif case == "out-is-a-file":
        out = tmp_path / "file"
        out.write_text("x")
    elif case == "nothing-readable":
        folder = tmp_path / "bad"
        folder.mkdir()
        (folder / "x.jpg").write_bytes(b"")
        (folder / "y.png").write_text("nope")
    elif case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "no-style":
        model = []
    before = {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()}
    assert cli(folder, *model, "-o", out, "--size", "32", "-q") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("atelier: error: "), err
    assert {p: p.read_bytes() for p in photos.rglob("*") if p.is_file()} == before
    if case != "nothing-readable":
        assert len(err) == 1
    if case in ("out-is-image-name", "empty", "no-style"):
        assert not out.exists()


# -------------------------------------------------------------------------------------------------- bench


from test_bench import pairs_file  # noqa: E402,F401  (the bench's fixture: two pairs of tiny images)


def test_bench_runs_a_student_folder(student, pairs_file, tmp_path):
    out = tmp_path / "res"
    assert main(["bench", "--methods", str(student), "--pairs", str(pairs_file), "--sizes", "32", "--iterations",
                 "2", "--vgg-weights", "random", "--judge", "random", "-q", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    recs = [r for r in res["records"] if r["kind"] == "model"]
    assert len(recs) == 2
    for r in recs:
        assert r["weights"].startswith("student:starry(sha256:") and r["evaluations"] == 0
        assert r["trace"] is None and r["macs_forward"] > 0 and r["params"] > 0
    assert "model-student" in (out / "results.md").read_text()


def test_bench_refuses_a_folder_that_is_not_a_student(pairs_file, tmp_path, capsys):
    folder = save_model_folder(tmp_path / "gen", {"w": torch.zeros(2)}, {"kind": "generator",
                                                                        "architecture": {"name": "tiny"}})
    out = tmp_path / "res"
    assert main(["bench", "--methods", str(folder), "--pairs", str(pairs_file), "--sizes", "32", "--iterations",
                 "2", "--vgg-weights", "random", "--judge", "random", "-q", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier: error: ") and "student" in err[0]
    assert not out.exists()
