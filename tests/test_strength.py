"""``strength`` for every method (issue 15): the optimisation engines scale the style weight by it (0: the photo, not
optimised), plain students and plain one-pass methods blend their picture with the photo in pixel space, and every
registered method reads it, through the API and the CLI. (The service: tests/test_serve.py; the conditional
students and magenta keep their own strength: tests/test_styles.py, tests/test_magenta.py.)"""

from __future__ import annotations

import pytest
import torch

from atelier import api, registry
from atelier.cli import main
from atelier.errors import OptionError
from atelier.images import pil_to_tensor, read_metadata, save_image, tensor_to_pil, to_image_tensor
from atelier.methods import find
from conftest import ToyColour, make_image, registered_methods

ENGINE = {"size": 48, "iterations": 3, "scales": "none"}  # the bundled lite encoder: no weights to fetch


def photo_and_style():
    """A smooth photo and a striped style: the engine has a texture to add within a few evaluations."""
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    stripes = torch.stack([(xx // 2) % 2, (yy // 3) % 2, ((xx + yy) // 4) % 2]).float().unsqueeze(0)
    return make_image(40, 60, 1), stripes


def test_every_registered_method_reads_strength():
    for name in registry.names("method"):
        m = find(name)
        assert "strength" in m.options, name
        m.refuse_inapplicable({"strength"})  # no longer refused for engines (nor plain students)


def test_an_engine_at_strength_0_returns_the_photo_without_optimising(monkeypatch):
    import atelier.methods.optimize as optimize

    def never(*args, **kwargs):
        raise AssertionError("strength 0 must not optimise (nor load the feature net)")

    monkeypatch.setattr(optimize, "optimize", never)
    monkeypatch.setattr(optimize.OptimizeMethod, "load_net", never)
    photo, style = photo_and_style()
    r = api.stylize(photo, style, "lite", strength=0, **ENGINE)
    assert torch.equal(r.tensor, to_image_tensor(photo, 48))  # the photo, exactly, at the output size
    assert r.evaluations == 0 and r.history == []
    md = r.metadata
    assert md["strength"] == 0 and "not optimised" in md["strength_applied"] and md["effective_style_weight"] == 0


def test_an_engines_strength_scales_the_style_weight_on_a_geometric_dial():
    photo, style = photo_and_style()
    options = {**ENGINE, "iterations": 20}
    full = api.stylize(photo, style, "lite", **options)
    half = api.stylize(photo, style, "lite", strength=0.5, **options)
    base = full.metadata["style_weight"]
    scale = 1000 ** -0.5
    assert full.metadata["effective_style_weight"] == base
    assert half.metadata["effective_style_weight"] == pytest.approx(base * scale)
    assert half.metadata["strength"] == 0.5 and "1000 ** (strength - 1)" in half.metadata["strength_applied"]
    assert half.options.style_weight == base  # the options record the method's weight; the metadata the product
    # The first evaluation sees the same image (init = the photo) in both runs: only the style term's weight differs.
    first_full, first_half = full.history[0]["parts"], half.history[0]["parts"]
    assert first_half["style"] == pytest.approx(first_full["style"] * scale, rel=1e-5)
    assert first_half["content"] == first_full["content"] and first_half["tv"] == first_full["tv"]
    # Three different pictures: the full style, half of it, and the photo (strength 0).
    p = to_image_tensor(photo, 48)
    assert (half.tensor - full.tensor).abs().mean() > 1e-2
    assert (half.tensor - p).abs().mean() > 1e-2


def test_a_baked_student_blends_with_the_photo_in_pixel_space():
    photo = make_image(40, 60, 3)
    p = to_image_tensor(photo, 64)
    full = api.stylize(photo, model="starry-tiny", size=64)
    none = api.stylize(photo, model="starry-tiny", size=64, strength=0)
    half = api.stylize(photo, model="starry-tiny", size=64, strength=0.5)
    assert torch.equal(none.tensor, p)  # strength 0 is the photo exactly
    assert torch.allclose(half.tensor, 0.5 * full.tensor + 0.5 * p, atol=1e-6)
    assert (half.tensor - full.tensor).abs().mean() > 1e-2 and (half.tensor - p).abs().mean() > 1e-2
    assert half.metadata["strength"] == 0.5 and half.metadata["strength_applied"].startswith("pixel blend")
    assert full.metadata["strength"] == 1.0


def test_a_plain_one_pass_method_blends_with_the_photo():
    photo, style = photo_and_style()
    with registered_methods({"toy-colour": ToyColour}):
        full = api.stylize(photo, style, "toy-colour", size=32)
        none = api.stylize(photo, style, "toy-colour", size=32, strength=0)
        half = api.stylize(photo, style, "toy-colour", size=32, strength=0.5)
    p = to_image_tensor(photo, 32)
    assert torch.equal(none.tensor, p)
    assert torch.allclose(half.tensor, 0.5 * full.tensor + 0.5 * p, atol=1e-6)
    assert half.metadata["strength_applied"].startswith("pixel blend")


def test_strength_on_the_command_line_for_an_engine_and_a_student(tmp_path, capsys):
    content, style = tmp_path / "photo.png", tmp_path / "art.png"
    save_image(make_image(40, 60, 1), content)
    save_image(make_image(32, 32, 7), style)
    out = tmp_path / "engine.png"
    assert main(["stylize", str(content), "-s", str(style), "-m", "lite", "--strength", "0.25", "-o", str(out),
                 "--size", "48", "--iterations", "2", "--scales", "none", "-q"]) == 0
    md = read_metadata(out)
    assert md["strength"] == 0.25 and md["effective_style_weight"] == pytest.approx(md["style_weight"] * 1000 ** -0.75)
    assert md["options"]["strength"] == 0.25
    out2 = tmp_path / "student.png"
    assert main(["stylize", str(content), "--model", "starry-tiny", "--strength", "0", "-o", str(out2),
                 "--size", "48"]) == 0
    assert "strength 0: the photo" in capsys.readouterr().out
    assert torch.equal(to_image_tensor(out2), pil_to_tensor(tensor_to_pil(to_image_tensor(content, 48))))
    assert main(["stylize", str(content), "-s", str(style), "--strength", "1.5", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error: --strength must be") and "\n" not in err
    with pytest.raises(OptionError, match=r"^strength must be a finite number in \[0, 1\]"):
        api.stylize(content, style, "lite", strength=-0.1, **ENGINE)
