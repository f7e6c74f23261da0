"""The CLI end to end (random VGG19 weights, tiny images) and every bad input it must refuse cleanly."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.images import read_metadata, save_image
from conftest import make_image

FAST = ["--size", "32", "--iterations", "2", "--scales", "none", "--vgg-weights", "random", "-q", "--method", "gatys"]


@pytest.fixture
def pics(tmp_path):
    content, style, style2 = tmp_path / "content.png", tmp_path / "style.jpg", tmp_path / "style2.png"
    save_image(make_image(40, 56, 1), content)
    save_image(make_image(48, 48, 2), style)
    save_image(make_image(30, 30, 3), style2)
    return content, style, style2


def stylize(*args):
    return main(["stylize", *map(str, args)])


def test_stylize_end_to_end_with_metadata(pics, tmp_path, capsys):
    content, style, _ = pics
    out = tmp_path / "out.png"
    assert stylize(content, "--style", style, "-o", out, *FAST) == 0
    img = Image.open(out)
    assert img.size == (32, 23)  # long side 32, aspect of 56x40 kept
    meta = read_metadata(out)
    assert meta["random_weights"] is True and "random" in meta["weights"]
    assert meta["method"] == "gatys" and meta["seed"] == 0 and meta["atelier_version"]
    assert meta["evaluations"] == 2
    assert "untrained random weights vgg19:random(seed=0)" in capsys.readouterr().out


def test_multi_style_and_save_every(pics, tmp_path):
    content, style, style2 = pics
    out = tmp_path / "blend.jpg"
    code = stylize(content, "--style", style, "--style", style2, "--style-weights", "0.7,0.3", "-o", out,
                   *FAST[:3], "4", *FAST[4:], "--save-every", "2")
    assert code == 0 and out.is_file()
    assert read_metadata(out)["options"]["style_weights"] == [0.7, 0.3]
    assert sorted(p.name for p in tmp_path.glob("blend.0*.jpg")) == ["blend.00002.jpg", "blend.00004.jpg"]


def test_multiscale_cli(pics, tmp_path):
    content, style, _ = pics
    out = tmp_path / "ms.png"
    args = ["--size", "48", "--iterations", "2", "--scales", "24,48", "--vgg-weights", "random", "-q", "-m", "gatys"]
    assert stylize(content, "--style", style, "-o", out, *args) == 0
    assert Image.open(out).size == (48, 34)
    assert read_metadata(out)["evaluations"] == 4


def _bad(tmp_path, pics, name):
    content, style, _ = pics
    out = tmp_path / "out.png"
    if name == "missing":
        return [tmp_path / "nope.png", "--style", style, "-o", out], out
    if name == "directory":
        return [tmp_path, "--style", style, "-o", out], out
    if name == "not-an-image":
        p = tmp_path / "notes.png"
        p.write_text("hello, not a picture")
        return [p, "--style", style, "-o", out], out
    if name == "truncated":
        p = tmp_path / "cut.jpg"
        Image.new("RGB", (64, 64), (200, 10, 10)).save(p, quality=90)
        p.write_bytes(p.read_bytes()[:300])
        return [content, "--style", p, "-o", out], out
    if name == "zero-size":
        p = tmp_path / "empty.jpg"
        p.write_bytes(b"")
        return [p, "--style", style, "-o", out], out
    if name == "too-many-pixels":
        return [content, "--style", style, "-o", out, "--max-pixels", "100"], out
    if name == "unknown-method":
        return [content, "--style", style, "-o", out, "--method", "picasso"], out
    if name == "unknown-layer":
        return [content, "--style", style, "-o", out, "--style-layers", "conv1_1,conv9_1"], out
    if name == "nan-weight":
        return [content, "--style", style, "-o", out, "--style-weight", "nan"], out
    if name == "negative-weight":
        return [content, "--style", style, "-o", out, "--content-weight", "-1"], out
    if name == "negative-blend":
        return [content, "--style", style, "-o", out, "--style-weights", "-1"], out
    if name == "unwritable-output":
        return [content, "--style", style, "-o", tmp_path / "no" / "such" / "dir" / "out.png"], out
    if name == "bad-extension":
        out = tmp_path / "out.txt"
        return [content, "--style", style, "-o", out], out
    if name == "wrong-shape-weights":
        w = tmp_path / "vgg.pth"
        torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5), "features.0.bias": torch.zeros(64)}, w)
        return [content, "--style", style, "-o", out, "--vgg-weights", w, "-m", "gatys"], out
    if name == "no-weights":
        return [content, "--style", style, "-o", out, "-m", "gatys"], out
    if name == "lite-model-of-another-kind":
        from atelier.folders import save_model_folder

        folder = save_model_folder(tmp_path / "gen", {"w": torch.zeros(2)}, {"kind": "generator",
                                                                            "architecture": {}})
        return [content, "--style", style, "-o", out, "--lite-model", folder], out
    raise AssertionError(name)


BAD = ["missing", "directory", "not-an-image", "truncated", "zero-size", "too-many-pixels", "unknown-method",
       "unknown-layer", "nan-weight", "negative-weight", "negative-blend", "unwritable-output", "bad-extension",
       "wrong-shape-weights", "no-weights", "lite-model-of-another-kind"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_exits_2_with_one_line_and_no_output(name, pics, tmp_path, capsys):
    args, out = _bad(tmp_path, pics, name)
    extra = [] if name in ("wrong-shape-weights", "no-weights") else ["--vgg-weights", "random"]
    code = stylize(*args, "--size", "32", "--iterations", "1", "-q", *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("atelier: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    assert not out.exists()
    assert not [p for p in out.parent.glob("*.tmp")] if out.parent.exists() else True


def test_subprocess_error_has_no_traceback(tmp_path):
    env = dict(os.environ, ATELIER_CACHE=str(tmp_path / "c"), TORCH_HOME=str(tmp_path / "t"))
    r = subprocess.run([sys.executable, "-m", "atelier", "stylize", str(tmp_path / "missing.jpg"), "--style",
                        str(tmp_path / "s.jpg"), "-o", str(tmp_path / "o.png")], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "missing.jpg" in r.stderr


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["stylize", "--help"])
    text = capsys.readouterr().out
    for expected in ("--iterations", "default: the method's", "default: the feature net's", "(default: 512)",
                     "--preserve-color", "--vgg-weights", "--effnet-weights"):
        assert expected in text


def test_methods_says_why_unavailable(capsys, monkeypatch):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "gatys" in out and "unavailable" in out and "vgg19-dcbb9e9d.pth" in out

    def state(text: str, name: str) -> str:  # each method's second line says whether it can run here
        lines = text.splitlines()
        return next(lines[i + 1].split(":")[0].strip() for i, line in enumerate(lines) if line.startswith(name + " "))

    assert state(out, "lite") == "available" and state(out, "gatys") == "unavailable"
    assert "starry-tiny  student" in out  # the bundled student is a method of its own kind
    monkeypatch.setenv("ATELIER_VGG_WEIGHTS", "random")
    assert main(["methods"]) == 0
    assert state(capsys.readouterr().out, "gatys") == "available"


def test_demo_runs_offline_with_the_bundled_encoder(tmp_path, capsys):
    pytest.importorskip("skimage")
    out = tmp_path / "demo.webp"
    assert main(["demo", "-o", str(out), "--size", "32", "--iterations", "2", "-q"]) == 0
    meta = read_metadata(out)
    assert meta["method"] == "lite" and meta["random_weights"] is False and meta["content"] == "skimage.data.chelsea"
    assert "lite:bundled" in capsys.readouterr().out


def test_output_may_not_overwrite_an_input(pics, capsys):
    content, style, _ = pics
    before = content.read_bytes()
    assert stylize(content, "--style", style, "-o", content, *FAST) == 2
    assert "input" in capsys.readouterr().err
    assert content.read_bytes() == before


def test_export_then_torch_free_runtime_cli(tmp_path, capsys):
    """atelier export writes a checked ONNX file; python -m atelier.runtime stylises with it (the CLI pair)."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "starry.onnx"
    assert main(["export", "starry-tiny", "-o", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"wrote {out}" in line and "max |onnx - torch|" in line and out.stat().st_size > 50_000
    photo = tmp_path / "p.png"
    save_image(make_image(40, 56, seed=3), photo)
    done = subprocess.run([sys.executable, "-m", "atelier.runtime", str(out), str(photo), "-o",
                           str(tmp_path / "o.png"), "--size", "64"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "o.png").size == (64, 46)


@pytest.mark.parametrize("argv, match", [
    (["export", "lite", "-o", "{tmp}/x.onnx"], "optimisation engines are not exportable"),
    (["export", "gatys", "-o", "{tmp}/x.onnx"], "optimisation engines are not exportable"),
    (["export", "starry-tiny", "-o", "{tmp}/x.onnx", "--quantize", "int8-static"], "calibration"),
    (["export", "starry-tiny", "-o", "{tmp}/x.onnx", "--opset", "3"], "opset"),
])
def test_export_bad_input_exits_2(argv, match, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error:") and match in err and "\n" not in err
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("argv, match", [
    (["serve", "--port", "70000"], "--port must be a whole number in [0, 65535]"),
    (["serve", "--formats", "PNG,GIF"], "--formats must name some of"),
    (["serve", "--request-timeout", "0"], "--request-timeout must be"),
])
def test_serve_bad_options_exit_2(argv, match, capsys):
    pytest.importorskip("fastapi")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error:") and match in err and "\n" not in err
