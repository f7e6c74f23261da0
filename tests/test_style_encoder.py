"""The style encoder (``nets/style_encoder.py``): any input size, the refusals in one line, its model folder, the
arbitrary-style student using it (API, CLI, ONNX export and the torch-free runtime), and ``atelier train
style-encoder`` resuming exactly. Encoders are built with seeded random weights; the teacher is a seeded random
Magenta."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from atelier.api import stylize
from atelier.cli import main
from atelier.errors import AtelierError, OptionError
from atelier.folders import load_model_weights, save_model_folder
from atelier.images import save_image
from atelier.methods.style_encoding import STYLE_MIN_SIDE, choose_embedder
from atelier.nets.style_encoder import (BUNDLED, NAME, StyleEncoder, build_style_encoder, check_style_input,
                                        load_style_encoder)
from atelier.train import style_encoder as encoder_train
from conftest import has_magenta_package, make_cond_student, make_image, resume_after_kill

ARCH = {"widths": [4, 8, 8], "hidden": 16}


def encoder_folder(folder, teacher: str = "random", seed: int = 0):
    """A style encoder model folder with seeded random weights, imitating ``teacher``."""
    torch.manual_seed(seed)
    net = build_style_encoder(NAME, ARCH)
    config = {"kind": "style_encoder", "architecture": {"encoder": NAME, "args": dict(net.arch)}, "name": folder.name,
              "embedding": {"type": "magenta-embedding", "dim": 100, "teacher": teacher}}
    return save_model_folder(folder, net.state_dict(), config, dtype=torch.float16)


def one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------------------------ the net


def test_any_size_from_the_minimum_up_and_deterministic():
    torch.manual_seed(0)
    net = StyleEncoder(**ARCH).eval()
    assert net.min_side == 8
    with torch.no_grad():
        for h, w in ((8, 8), (9, 13), (37, 53), (256, 256), (300, 97)):
            x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
            e = net(x)
            assert e.shape == (2, 100) and bool(torch.isfinite(e).all())
            assert torch.equal(net(x), e)
            assert torch.allclose(net(x[:1]), e[:1], atol=1e-6)  # each picture on its own
        flat = net(torch.full((1, 3, 40, 40), 0.5))  # a flat image: zero spread, finite all the same
        assert bool(torch.isfinite(flat).all())


@pytest.mark.parametrize("bad, match", [
    (torch.rand(3, 32, 32), r"\[N,3,H,W\]"), (torch.rand(1, 4, 32, 32), r"\[N,3,H,W\]"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), r"float image tensor"), ("style.png", r"got str"),
    (torch.rand(1, 3, 7, 64), r"64x7 px; the style encoder needs at least 8 px"),
    (torch.full((1, 3, 16, 16), float("nan")), "NaN or infinite"), (torch.full((1, 3, 16, 16), float("inf")), "NaN")])
def test_bad_input_is_refused_in_one_line(bad, match):
    with pytest.raises(AtelierError, match=match) as e:
        check_style_input(bad, 8)
    one_line(e)


def test_bad_architecture_is_refused_in_one_line():
    for arch, match in (({"widths": []}, "1 to 7"), ({"widths": [4, 0]}, "from 1 to"), ({"hidden": 2.5}, "hidden"),
                        ({"depth": 3}, "unknown argument"), ({"widths": 8}, "list of whole numbers")):
        with pytest.raises(AtelierError, match=match):
            build_style_encoder(NAME, arch)
    with pytest.raises(AtelierError, match="unknown style encoder 'vgg'; choose from: stats-mlp"):
        build_style_encoder("vgg", {})


# ------------------------------------------------------------------------------------------------ model folder


def test_model_folder_round_trip_and_damage(tmp_path):
    folder = encoder_folder(tmp_path / "enc")
    loaded = load_style_encoder(folder)
    torch.manual_seed(0)
    fresh = build_style_encoder(NAME, ARCH).eval()
    fresh.load_state_dict({k: v.half().float() for k, v in fresh.state_dict().items()})  # fp16 storage
    x = make_image(40, 56, 3)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), fresh(x))
    with pytest.raises(AtelierError, match="needs at least 8 px") as e:
        loaded.encode(torch.rand(1, 3, 5, 40))
    one_line(e)
    assert loaded.identity.startswith("style-encoder:enc(sha256:") and loaded.teacher == "random"
    assert load_style_encoder(folder) is loaded  # cached
    config = json.loads((folder / "config.json").read_text())
    for change, match in (({"embedding": {"dim": 100}}, "embedding must name its teacher"),
                          ({"architecture": {"encoder": "vgg"}}, "unknown style encoder"),
                          ({"kind": "student"}, "not a 'style_encoder' one")):
        broken = tmp_path / f"broken-{len(change)}-{match[:4]}"
        broken.mkdir()
        (broken / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
        (broken / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(AtelierError, match=match) as e:
            load_style_encoder(broken)
        one_line(e)
    with pytest.raises(AtelierError, match="model folder not found"):
        load_style_encoder(tmp_path / "none")


# ------------------------------------------------------------------------------------- the arbitrary student


@pytest.fixture
def student_and_encoder(tmp_path):
    """A conditional student taught by the seeded random Magenta ("random"), and a style encoder of that teacher."""
    return make_cond_student(tmp_path / "any"), encoder_folder(tmp_path / "enc")


def test_arbitrary_student_uses_the_chosen_encoder(tmp_path, student_and_encoder):
    from atelier.methods.magenta import clear_embedding_cache, embedding_cache_size

    student, enc = student_and_encoder
    style, photo = make_image(64, 80, 11), make_image(40, 48, 1)
    clear_embedding_cache()
    r = stylize(photo, style, model=student, style_encoder=str(enc), size=48)
    assert r.metadata["style_encoder"] == load_style_encoder(enc).identity
    calls = []
    hook = load_style_encoder(enc).net.register_forward_hook(lambda *_: calls.append(1))
    try:  # the embedding cache serves the encoder too: the same style again runs no net
        assert torch.equal(stylize(photo, style, model=student, style_encoder=str(enc), size=48).tensor, r.tensor)
    finally:
        hook.remove()
    assert calls == [] and embedding_cache_size() == 1
    assert r.metadata["options"]["style_encoder"] == str(enc)
    again = stylize(photo, [style, make_image(50, 50, 12)], model=student, style_encoder=str(enc), size=48,
                    style_weights=[1, 3], strength=0.5)
    assert again.tensor.shape == (1, 3, 40, 48) and not torch.equal(again.tensor, r.tensor)
    # magenta_weights means Magenta's predictor, as before the encoder existed; with an encoder named it is refused.
    p = stylize(photo, style, model=student, magenta_weights="random", size=48)
    assert p.metadata["style_encoder"].startswith("magenta-style-predictor(") and "random" in p.metadata[
        "style_encoder"]
    with pytest.raises(OptionError, match="^magenta_weights is for Magenta's style predictor"):
        stylize(photo, style, model=student, magenta_weights="random", style_encoder=str(enc))
    # An encoder of another teacher: refused by name; by default the student falls back to the predictor.
    other = encoder_folder(tmp_path / "other", teacher="magenta-arbitrary-v1:somewhere-else")
    with pytest.raises(AtelierError, match="imitates magenta-arbitrary-v1:somewhere-else.*style_encoder magenta") as e:
        stylize(photo, style, model=student, style_encoder=str(other))
    one_line(e)
    assert choose_embedder({"condition": {"teacher": ["magenta(x)"]}}, "magenta", "random").identity.startswith(
        "magenta-arbitrary-v1:random")


@pytest.mark.skipif(not BUNDLED.is_dir(), reason="no bundled style encoder")
def test_any_style_uses_the_bundled_encoder_by_default():
    photo = make_image(40, 48, 1)
    r = stylize(photo, make_image(64, 64, 9), model="any-style", size=48)
    assert r.metadata["style_encoder"] == load_style_encoder().identity
    if has_magenta_package():  # Magenta's exact predictor stays a choice
        m = stylize(photo, make_image(64, 64, 9), model="any-style", size=48, style_encoder="magenta")
        assert m.metadata["style_encoder"].startswith("magenta-style-predictor(magenta-arbitrary-v1:styletransfer")


def test_any_style_is_available_through_the_encoder_when_the_predictor_is_not(tmp_path, monkeypatch):
    from atelier.methods import find

    monkeypatch.setenv("ATELIER_MAGENTA_WEIGHTS", str(tmp_path / "nowhere.safetensors"))
    ok, reason = find("any-style").availability()
    assert ok, reason  # the bundled encoder imitates the teacher any-style was trained on: no predictor needed
    r = stylize(make_image(40, 48, 1), make_image(64, 64, 9), model="any-style", size=48)
    assert r.metadata["style_encoder"] == load_style_encoder().identity


def test_bad_style_images_are_refused_in_one_line(tmp_path, student_and_encoder, capsys):
    student, enc = student_and_encoder
    photo = tmp_path / "photo.png"
    save_image(make_image(40, 48, 1), photo)
    small = tmp_path / "small.png"
    save_image(make_image(STYLE_MIN_SIDE - 1, 200, 2), small)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out.png"
    for style, match in ((small, f"200x{STYLE_MIN_SIDE - 1} px; the style encoder needs at least {STYLE_MIN_SIDE}"),
                         (corrupt, "corrupt.jpg"), (tmp_path / "none.png", "not found")):
        assert main(["stylize", str(photo), "--model", str(student), "--style", str(style), "--style-encoder",
                     str(enc), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("atelier: error:") and match in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()
    for style, match in ((np.full((40, 40, 3), np.nan, np.float32), "NaN or infinite"),
                         (np.zeros((40, 40, 2), np.float32), "shape"), (torch.rand(2, 3, 40, 40), "shape")):
        with pytest.raises(AtelierError, match=match) as e:
            stylize(make_image(40, 48, 1), style, model=student, style_encoder=str(enc))
        one_line(e)
    # Magenta's predictor takes a small style image, as it always did.
    assert stylize(make_image(40, 48, 1), small, model=student, style_encoder="magenta", magenta_weights="random",
                   size=48).tensor.shape == (1, 3, 40, 48)


def test_export_writes_the_encoder_beside_the_student_and_the_runtime_runs_it(tmp_path, student_and_encoder):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from atelier.export import export_onnx
    from atelier.images import to_image_tensor
    from atelier.methods.magenta import style_square
    from atelier.runtime import OnnxStylizer, open_session

    student, enc = student_and_encoder
    out = tmp_path / "any.onnx"
    report = export_onnx(student, out, style_encoder=str(enc))
    pred = tmp_path / "any.predict.onnx"
    assert report.predictor_path == str(pred) and report.embedding_max_abs_diff <= 1e-3
    meta = open_session(out)[1]
    pmeta = open_session(pred)[1]
    loaded = load_style_encoder(enc)
    assert pmeta["kind"] == "style-encoder" and pmeta["source"] == loaded.identity and pmeta["teacher"] == "random"
    assert meta["style_encoder"] == loaded.identity and meta["style_min_side"] == STYLE_MIN_SIDE
    assert meta["magenta_source"] == "random" and meta["style_load_side"] == 512
    # The runtime embeds a style image as the torch path does: parity of the embedding, any size.
    style = tmp_path / "style.png"
    save_image(make_image(150, 97, 8), style)
    runtime = OnnxStylizer(out)
    got = runtime.condition_of(str(style))
    with torch.no_grad():
        want = loaded.net(style_square(to_image_tensor(str(style), 512))).numpy()
    assert np.abs(got - want).max() < 1e-4
    small = tmp_path / "small.png"
    save_image(make_image(20, 64, 8), small)
    with pytest.raises(AtelierError, match="64x20 px; the style encoder needs at least 32") as e:
        runtime.condition_of(str(small))
    one_line(e)
    # Magenta's predictor on request, and a style_encoder for a student that has no style images: refused.
    p = export_onnx(student, tmp_path / "m.onnx", style_encoder="magenta", magenta_weights="random")
    assert open_session(p.predictor_path)[1]["kind"] == "magenta-predictor"


def test_a_style_tensor_is_resized_once_for_many_photos():
    from atelier.methods.style_encoding import load_side

    style = make_image(600, 900, 3)
    once = load_side(style, None)
    assert once.shape == (1, 3, 341, 512) and load_side(style, None) is once  # a video's frames: one resize
    style.mul_(0.5)  # changed in place: resized again
    assert load_side(style, None) is not once


def test_style_encoder_option_is_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(OptionError, match="^style_encoder does not apply to student method"):
        stylize(make_image(40, 48, 1), model="starry-tiny", style_encoder="distilled")
    with pytest.raises(OptionError, match="^style_encoder must be distilled, magenta or a style encoder folder"):
        stylize(make_image(40, 48, 1), make_image(40, 40, 2), model="any-style", style_encoder="  ")


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("encdata")
    for split, n, seed in (("photos", 4, 0), ("styles", 2, 40), ("held", 2, 60)):
        (root / split).mkdir()
        for i in range(n):
            save_image(make_image(40, 56, seed + i), root / split / f"{split}{i}.png")
    return root


def train(tmp_path, data, **kw):
    options = dict(images=[str(data / "photos")], styles=[str(data / "styles")], held_out_styles=str(data / "held"),
                   magenta_weights="random", size=32, batch=4, crops_per_image=2, crops_per_style=3, eval_crops=1,
                   widths=(4, 8), hidden=8, checkpoint_every=2, log_every=1, sample_every=0, steps=3)
    options.update(kw)
    options["out"] = str(tmp_path / options.pop("name", "enc"))
    return encoder_train.train_style_encoder(progress=False, **options)


def test_training_writes_a_folder_the_student_can_use_and_keeps_its_bank(tmp_path, data):
    out = train(tmp_path, data)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "style_encoder"
    assert config["embedding"]["teacher"].startswith("magenta-arbitrary-v1:random")
    t = config["training"]
    assert t["data"]["crops"] == 4 * 2 + 2 * 3 and t["cosine_held_out"]["crops"] == 2 * 2
    assert set(t["cosine_held_out"]["per_image"]) == {"held0.png", "held1.png"}
    assert "Held-out cosine per style image" in (out / "MODEL_CARD.md").read_text()
    bank = sorted(p.name for p in (tmp_path / "enc.run" / "bank").iterdir())
    assert bank[:2] == ["chunk-0000.safetensors", "held.safetensors"] and len(bank) == 3
    assert bank[2].startswith(f"stats-{t['data']['bank_digest']}-")  # the frozen trunk's statistics of each crop
    assert load_style_encoder(out).net.arch == {"widths": [4, 8], "hidden": 8, "dim": 100}
    # Another seed makes another bank: a run folder holding this one's refuses it, never reuses it.
    shutil.copytree(tmp_path / "enc.run" / "bank", tmp_path / "other.run" / "bank")
    with pytest.raises(AtelierError, match="labelled from other data or options") as e:
        train(tmp_path, data, name="other", seed=1)
    one_line(e)
    assert train(tmp_path, data, name="same", run_dir=str(tmp_path / "other.run"), steps=0)  # the same bank: reused
    # The command line runs the same task.
    assert main(["train", "style-encoder", "--images", str(data / "photos"), "--magenta-weights", "random",
                 "--size", "32", "--batch", "2", "--crops-per-image", "1", "--widths", "4", "--hidden", "4",
                 "--steps", "1", "--out", str(tmp_path / "cli"), "--quiet"]) == 0


@pytest.mark.parametrize("train_trunk", [False, True])
def test_training_resumes_after_a_kill_exactly(tmp_path, data, monkeypatch, train_trunk):
    straight = train(tmp_path, data, name="straight", steps=5, train_trunk=train_trunk)
    resumed = resume_after_kill(monkeypatch, encoder_train.StyleEncoderTask,
                                lambda **kw: train(tmp_path, data, train_trunk=train_trunk, **kw), tmp_path / "killed")
    a, b = load_model_weights(straight), load_model_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    start = build_style_encoder(NAME, {"widths": [4, 8], "hidden": 8}).state_dict()
    frozen = [k for k in a if k.startswith("convs.")]
    # The conv levels learn only with train_trunk (fp16 storage: compared as stored).
    assert all(torch.equal(a[k], start[k].half().float()) for k in frozen) is not train_trunk
