"""The torch-free ONNX runtime (atelier.runtime) and the shared tiling plan (atelier.tiling): agreement with the
torch path at any size, whole and in tiles, metadata, inputs, errors, and a run in a process where torch cannot be
imported at all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from atelier import api  # noqa: E402
from atelier.errors import AtelierError  # noqa: E402
from atelier.export import export_onnx  # noqa: E402
from atelier.images import save_image  # noqa: E402
from atelier.methods.feedforward import StudentModel  # noqa: E402
from atelier.runtime import OnnxStylizer, to_array  # noqa: E402
from atelier.tiling import iter_tiles, tile_starts  # noqa: E402
from conftest import NO_TORCH_PRELUDE, make_image  # noqa: E402
from test_export import make_student  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    folder = make_student(root / "wavy", seed=1)
    out = root / "wavy.onnx"
    export_onnx(folder, out)
    return folder, out, StudentModel.from_folder(folder)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)).numpy()


def torch_run(student: StudentModel, x: np.ndarray, **kw) -> np.ndarray:
    return student.run(torch.from_numpy(x), **kw).numpy()


# ------------------------------------------------------------------------------------------------- model


def test_info_carries_the_models_config(model):
    folder, out, student = model
    s = OnnxStylizer(out, threads=1)
    info = s.info
    assert info["name"] == "wavy" and info["kind"] == "student" and info["generator"] == "tiny"
    assert info["style"] == "wave.jpg" and info["source"] == student.identity and info["quantize"] == "none"
    assert (info["pad_multiple"], info["min_size"], info["min_input"], info["export_format"]) == (4, 8, 8, 1)
    assert info["architecture"] == json.loads((folder / "config.json").read_text())["architecture"]["args"]
    assert 0 <= info["parity_max_abs_diff"] <= 1e-3 and s.min_tile == student.min_tile
    assert OnnxStylizer(out.read_bytes()).info == info  # bytes load the same model


@pytest.mark.parametrize("shape", [(1, 3, 97, 131), (1, 3, 256, 384), (2, 3, 40, 24), (1, 3, 8, 8), (1, 3, 5, 7),
                                   (1, 3, 2, 3), (1, 3, 1, 1), (1, 3, 1, 300)])
def test_run_matches_torch_at_any_size(model, shape):
    # Below 8 px the graph alone would mis-pad (reflection of a 2-px image): the runtime pads like the generator.
    _, out, student = model
    x = rand(*shape, seed=shape[-1])
    got, want = OnnxStylizer(out, threads=1).run(x), torch_run(student, x)
    assert got.shape == want.shape == x.shape
    assert np.abs(got - want).max() <= 1e-3


@pytest.mark.parametrize("tile,overlap", [(64, 16), (96, 32), (8, 0)])
def test_tiled_run_matches_the_torch_tiles(model, tile, overlap):
    _, out, student = model
    x = make_image(150, 203, seed=3).numpy()
    s = OnnxStylizer(out, threads=1)
    got, want = s.run(x, tile=tile, overlap=overlap), torch_run(student, x, tile=tile, overlap=overlap)
    assert np.abs(got - want).max() <= 1e-3
    # And tiles were really used: each normalises with its own statistics, so the result moves off the one pass.
    assert np.abs(got - s.run(x)).max() > 5e-3


def test_tiles_blend_a_pointwise_function_exactly():
    x = rand(1, 3, 131, 203, seed=4)

    def f(a):
        return np.tanh(3.0 * a - 1.2).astype(np.float32)

    for tile, overlap in [(64, 16), (50, 32), (33, 32), (97, 40), (300, 0)]:
        out = np.zeros_like(x)
        seen = []
        for t in iter_tiles(131, 203, tile, overlap):
            assert t.h <= tile and t.w <= tile and t.share.shape == (t.h, t.w) and t.share.dtype == np.float32
            region = out[..., t.y:t.y + t.h, t.x:t.x + t.w]
            region += t.share * (f(x[..., t.y:t.y + t.h, t.x:t.x + t.w]) - region)
            seen.append((t.y, t.x))
        assert np.array_equal(out, f(x))
        assert len(seen) == len(tile_starts(131, tile, overlap)) * len(tile_starts(203, tile, overlap))


# ------------------------------------------------------------------------------------------------ images


def test_stylize_takes_paths_pil_images_and_arrays_alike(model, tmp_path):
    _, out, _ = model
    path = tmp_path / "photo.png"
    save_image(make_image(60, 90, seed=5), path)
    pil = Image.open(path).convert("RGB")
    s = OnnxStylizer(out, threads=1)
    ref = np.asarray(s.stylize(path))
    assert ref.shape == (60, 90, 3)
    for other in (pil, np.asarray(pil), np.asarray(pil).astype(np.float32) / 255,
                  np.asarray(pil).transpose(2, 0, 1).astype(np.float32) / 255):
        assert np.array_equal(np.asarray(s.stylize(other)), ref)
    assert s.stylize(path, size=45).size == (45, 30)


@pytest.mark.parametrize("tile", [0, 48])
def test_stylize_with_size_matches_the_api(model, tmp_path, tile):
    # Same resize filter (bicubic, antialiased), same net: at most one grey level apart (rounding of values that
    # differ by ~1e-5), and almost everywhere equal.
    folder, out, _ = model
    path = tmp_path / "photo.png"
    save_image(make_image(120, 170, seed=6), path)
    want = np.asarray(api.stylize(path, model=folder, size=100, tile=tile).image).astype(int)
    got = np.asarray(OnnxStylizer(out, threads=1).stylize(path, size=100, tile=tile)).astype(int)
    assert got.shape == want.shape == (71, 100, 3)
    diff = np.abs(got - want)
    assert diff.max() <= 1 and diff.mean() < 0.02


def test_arrays_are_clamped_and_shaped(model):
    a = to_array(np.full((4, 5, 3), 255, dtype=np.uint8))
    assert a.shape == (1, 3, 4, 5) and a.dtype == np.float32 and a.max() == 1.0
    assert to_array(np.full((1, 3, 4, 5), 2.0)).max() == 1.0


# ------------------------------------------------------------------------------------------------ errors


def _write_plain_onnx(path: Path) -> Path:
    """A valid ONNX file with the right names but no atelier metadata (an Identity graph)."""
    from onnx import TensorProto, helper

    shape = ["batch", 3, "height", "width"]
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["stylized"])], "plain",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("stylized", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    props.update({f"atelier.{k}": v for k, v in changes.items()})
    onnx.helper.set_model_props(m, props)
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("case,match", [
    ("missing", "not found"), ("directory", "not a file"), ("garbage", "cannot load"),
    ("no-metadata", "not written by atelier export"), ("newer-format", "newer"), ("bad-min-input", "min_input"),
    ("threads-zero", "threads"), ("threads-bool", "threads"),
])
def test_bad_model_files_give_one_line_errors(model, tmp_path, case, match):
    _, out, _ = model
    kw = {}
    if case == "missing":
        path = tmp_path / "nope.onnx"
    elif case == "directory":
        path = tmp_path
    elif case == "garbage":
        path = tmp_path / "g.onnx"
        path.write_bytes(b"\x08\x07this is not protobuf" * 10)
    elif case == "no-metadata":
        path = _write_plain_onnx(tmp_path / "plain.onnx")
    elif case == "newer-format":
        path = _with_metadata(out, tmp_path / "new.onnx", export_format="99")
    elif case == "bad-min-input":
        path = _with_metadata(out, tmp_path / "bad.onnx", min_input="zero")
    else:
        path, kw = out, {"threads": 0 if case == "threads-zero" else True}
    with pytest.raises(AtelierError) as e:
        OnnxStylizer(path, **kw)
    assert match in one_line(e)


@pytest.mark.parametrize("call,match", [
    (lambda s, p: s.run(rand(1, 3, 64, 64), tile=4, overlap=0), "minimum input"),
    (lambda s, p: s.run(rand(1, 3, 64, 64), tile=16, overlap=16), "overlap"),
    (lambda s, p: s.run(rand(1, 3, 64, 64), tile=-1), "--tile"),
    (lambda s, p: s.run(rand(3, 64, 64)), "[N,3,H,W]"),
    (lambda s, p: s.stylize(p / "nope.png"), "not found"),
    (lambda s, p: s.stylize(p), "not an image file"),
    (lambda s, p: s.stylize(p / "notes.png"), "not an image"),
    (lambda s, p: s.stylize(np.zeros((4, 4))), "arrays must be"),
    (lambda s, p: s.stylize(np.full((4, 4, 3), np.nan, dtype=np.float32)), "NaN"),
    (lambda s, p: s.stylize(rand(1, 3, 16, 16), size=0), "size"),
    (lambda s, p: s.stylize(12), "a path, a PIL image or a numpy array"),
    (lambda s, p: s.stylize(p / "big.png", max_pixels=100), "too large"),
])
def test_bad_calls_give_one_line_errors(model, tmp_path, call, match):
    (tmp_path / "notes.png").write_text("not a picture")
    save_image(make_image(20, 20), tmp_path / "big.png")
    with pytest.raises(AtelierError) as e:
        call(OnnxStylizer(model[1], threads=1), tmp_path)
    assert match in one_line(e)


# -------------------------------------------------------------------------------------------- torch-free


NO_TORCH = NO_TORCH_PRELUDE + textwrap.dedent('''
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("the blocker did not stop torch")

    import numpy as np
    from atelier.runtime import OnnxStylizer

    model, x_path, photo, out = sys.argv[1:5]
    s = OnnxStylizer(model, threads=1)
    x = np.load(x_path)
    np.save(out + "/one.npy", s.run(x))
    np.save(out + "/tiled.npy", s.run(x, tile=64, overlap=16))
    s.stylize(photo, size=80, tile=48).save(out + "/styled.png")
    from atelier.runtime import main
    assert main([model, photo, "-o", out + "/cli.png", "--size", "80", "--tile", "48", "--threads", "1"]) == 0
    assert main([model, out + "/missing.png", "-o", out + "/never.png"]) == 2
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("torch modules:", loaded)
    print("ok" if not loaded else "torch was imported")
''')


def test_runtime_works_where_torch_cannot_be_imported(model, tmp_path):
    folder, out, student = model
    x = make_image(131, 197, seed=7).numpy()
    np.save(tmp_path / "x.npy", x)
    photo = tmp_path / "photo.png"
    save_image(make_image(90, 120, seed=8), photo)
    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "x.npy"), str(photo),
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok"), done.stdout
    one, tiled = np.load(tmp_path / "one.npy"), np.load(tmp_path / "tiled.npy")
    assert np.abs(one - torch_run(student, x)).max() <= 1e-3
    assert np.abs(tiled - torch_run(student, x, tile=64, overlap=16)).max() <= 1e-3
    assert np.abs(tiled - one).max() > 5e-3  # the tiled run really was tiled
    want = np.asarray(api.stylize(photo, model=folder, size=80, tile=48).image).astype(int)
    got = np.asarray(Image.open(tmp_path / "styled.png").convert("RGB")).astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1
    cli = np.asarray(Image.open(tmp_path / "cli.png").convert("RGB")).astype(int)
    assert np.array_equal(cli, got)  # python -m atelier.runtime: the same picture
    assert "error" in done.stderr and not (tmp_path / "never.png").exists()


def test_a_student_refuses_the_magenta_options(model, tmp_path, capsys):
    from atelier.runtime import load_model, main

    assert isinstance(load_model(model[1]), OnnxStylizer)
    save_image(make_image(20, 20), tmp_path / "p.png")
    args = [str(model[1]), str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png")]
    for extra in (["--style", str(tmp_path / "p.png")], ["--strength", "0.5"]):
        assert main(args + extra) == 2
        err = capsys.readouterr().err.strip()
        assert "student" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()
