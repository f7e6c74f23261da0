"""The texture recipe of students (issue 21): the hinge and multi-scale adversarial losses, the conditional
discriminator, feature distillation at several scales, the detail stage of ``tiny-cond``, and an exact resume of a
run that uses them all."""

import pytest
import torch
from torch import nn

from atelier.errors import AtelierError
from atelier.folders import load_model_weights, read_model_config
from atelier.nets import build_discriminator, build_generator, discriminator_arch
from atelier.options import StudentTrainOptions
from atelier.train import styles as styles_train
from atelier.train.student import StudentTask, gan_loss, generator_gan_loss
from conftest import resume_after_kill
from test_styles import set_dirs, train_set  # noqa: F401  (the two-style pairs fixture)


def test_adversarial_losses_on_hand_made_logits():
    hi, lo = torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -0.5)
    # hinge: max(0, 1 - x) for real, max(0, 1 + x) for fake; the generator raises the fake's logits.
    assert float(gan_loss("hinge", hi, True)) == 0.0
    assert float(gan_loss("hinge", lo, True)) == pytest.approx(1.5)
    assert float(gan_loss("hinge", hi, False)) == pytest.approx(3.0)
    assert float(gan_loss("hinge", lo, False)) == pytest.approx(0.5)
    assert float(generator_gan_loss("hinge", lo)) == pytest.approx(0.5)
    # lsgan: squared distance to 1 (real) or 0 (fake); its generator loss is the real one.
    assert float(gan_loss("lsgan", lo, True)) == pytest.approx(2.25)
    assert float(gan_loss("lsgan", lo, False)) == pytest.approx(0.25)
    assert float(generator_gan_loss("lsgan", lo)) == pytest.approx(2.25)
    assert float(gan_loss("bce", torch.zeros(1, 1, 2, 2), True)) == pytest.approx(0.693147, abs=1e-5)
    # A multi-scale discriminator's logits: the mean of the scales' losses (not weighted by patch count).
    small = torch.full((2, 1, 1, 1), 2.0)
    assert float(gan_loss("hinge", [lo, small], False)) == pytest.approx((0.5 + 3.0) / 2)
    assert float(generator_gan_loss("hinge", [lo, small])) == pytest.approx((0.5 - 2.0) / 2)


def test_multi_scale_conditional_discriminator():
    torch.manual_seed(0)
    d = build_discriminator({"in_channels": 8, "base": 8, "scales": 2})
    assert discriminator_arch(d) == {"in_channels": 8, "base": 8, "n_layers": 3, "scales": 2}
    with torch.no_grad():
        out = d(torch.rand(2, 8, 64, 64))
    assert isinstance(out, list) and [tuple(x.shape) for x in out] == [(2, 1, 6, 6), (2, 1, 2, 2)]
    with pytest.raises(AtelierError, match="at least 48x48"):
        d(torch.rand(1, 8, 40, 40))
    with pytest.raises(AtelierError, match="scales must be a whole number 1..4"):
        build_discriminator({"scales": 0})
    # One scale keeps pix2pix's parameter names (folders and checkpoints written before scales existed load).
    assert all(k.startswith("net.") for k in build_discriminator({"base": 4}).state_dict())


class Identity2(nn.Module):
    """A hand-checkable perceptual net: level ``a`` is the image, level ``b`` its 2x2 average."""

    layer_names = ("a", "b")
    default_content_layers = ("b",)
    default_style_layers = ("a", "b")

    def forward(self, x, layers):
        out = {"a": x, "b": nn.functional.avg_pool2d(x, 2)}
        return {k: out[k] for k in layers}


def _task(tmp_path, **kw) -> StudentTask:
    task = StudentTask(StudentTrainOptions.from_kwargs(pairs=str(tmp_path), out=str(tmp_path / "o"), **kw))
    task.perceptual = Identity2()
    return task


def test_distillation_and_perceptual_terms_on_hand_made_tensors(tmp_path):
    target = torch.rand(2, 3, 16, 16) + 0.1
    task = _task(tmp_path, distill_weight=1.0, perceptual_weight=1.0, perceptual_scales=2)
    terms, features = task.feature_terms(target.clone(), target)
    assert float(terms["distill"]) == pytest.approx(0.0, abs=1e-7)   # the teacher's own picture: nothing to learn
    assert float(terms["perceptual"]) == pytest.approx(0.0, abs=1e-7)
    assert set(features) == {"a", "b"} and torch.equal(features["a"], target)
    # A black picture is at relative distance 1 from the target at every level and every scale; its Gram matrices
    # are 0, so the perceptual term is content 1 + style 1.
    terms, _ = task.feature_terms(torch.zeros_like(target), target)
    assert float(terms["distill"]) == pytest.approx(1.0)
    assert float(terms["perceptual"]) == pytest.approx(2.0)
    # The picture shifted by one pixel: the same texture, misplaced. The distillation term sees it.
    shifted = torch.roll(target, 1, dims=-1)
    assert float(task.feature_terms(shifted, target)[0]["distill"]) > 0.05
    assert "distill" not in _task(tmp_path, perceptual_weight=1.0).feature_terms(shifted, target)[0]
    # Only the distillation term is on: no perceptual entry, and the second scale changes the number.
    one = _task(tmp_path, distill_weight=1.0).feature_terms(shifted, target)[0]
    two = _task(tmp_path, distill_weight=1.0, perceptual_scales=2).feature_terms(shifted, target)[0]
    assert set(one) == {"distill"} and float(one["distill"]) != pytest.approx(float(two["distill"]))


def test_detail_stage_paints_any_size_and_old_configs_rebuild_as_before():
    torch.manual_seed(1)
    g = build_generator("tiny-cond", {"cond_dim": 2, "width": 8, "blocks": 1, "base": 8, "detail": 2,
                                      "bilinear": True}).eval()
    torch.nn.init.normal_(g.film.weight, 0, 0.5)
    plain = build_generator("tiny-cond", {"cond_dim": 2, "width": 8, "blocks": 1, "base": 8, "bilinear": True})
    assert len(g.norm_channels) == len(plain.norm_channels) + 2
    assert sum(p.numel() for p in g.parameters()) > sum(p.numel() for p in plain.parameters())
    assert "detail_a.0.0.weight" not in plain.state_dict()  # a folder without `detail` loads into the old shape
    with torch.no_grad():
        for h, w in ((17, 23), (37, 53), (64, 48), (5, 9)):
            x = torch.rand(1, 3, h, w)
            y = g(x, torch.tensor([[1.0, 0.0]]))
            assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
        x = torch.rand(1, 3, 40, 40)
        assert (g(x, torch.tensor([[1.0, 0]])) - g(x, torch.tensor([[0, 1.0]]))).abs().mean() > 1e-4
    with pytest.raises(AtelierError, match="detail must be a whole number 0..8"):
        build_generator("tiny-cond", {"detail": 9})


RECIPE = dict(size=48, gan_loss="hinge", d_scales=2, d_base=4, distill_weight=1.0, perceptual_weight=1.0,
              perceptual_scales=2, perceptual_net="lite", base=8, detail=1, adv_weight=0.5)


@pytest.fixture
def random_lite(monkeypatch):
    from atelier.features import lite

    real = lite.load_lite
    monkeypatch.setattr(lite, "load_lite", lambda weights=None, **kw: real("random", **kw))


def test_texture_recipe_trains_records_itself_and_resumes_exactly(tmp_path, set_dirs, monkeypatch,  # noqa: F811
                                                                  random_lite):
    straight = train_set(tmp_path, set_dirs, name="straight", steps=5, **RECIPE)
    config = read_model_config(straight)
    facts = config["training"]
    assert facts["discriminator"] == {"in_channels": 6 + 2, "base": 4, "n_layers": 3, "scales": 2}
    assert config["architecture"]["args"]["detail"] == 1 and config["architecture"]["args"]["base"] == 8
    assert facts["distill_weight"] == 1.0 and facts["perceptual_scales"] == 2 and facts["adv_weight"] == 0.5
    assert {"d", "adv", "distill", "perceptual"} <= set(facts["final_losses"])
    card = (straight / "MODEL_CARD.md").read_text()
    assert "adversarial hinge x 0.5 (PatchGAN, base 4, 2 scales)" in card
    assert "feature distillation x 1.0 under lite at 2 scales" in card
    resumed = resume_after_kill(monkeypatch, styles_train.StyleSetTask,
                                lambda **kw: train_set(tmp_path, set_dirs, **{**RECIPE, **kw}), tmp_path / "killed")
    a, b = load_model_weights(straight), load_model_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recipe_options_are_checked(tmp_path, set_dirs):  # noqa: F811
    with pytest.raises(AtelierError, match="d_scales 2 needs crops of at least 48 px"):
        train_set(tmp_path, set_dirs, size=32, gan_loss="hinge", d_scales=2)
    with pytest.raises(AtelierError, match="^gan_loss must be one of"):
        train_set(tmp_path, set_dirs, gan_loss="wasserstein")
    with pytest.raises(AtelierError, match="^perceptual_scales must be"):
        train_set(tmp_path, set_dirs, perceptual_scales=0)
    with pytest.raises(AtelierError, match="^detail must be"):
        train_set(tmp_path, set_dirs, detail=-1)


def test_init_starts_from_a_trained_folder_and_refuses_another_shape(tmp_path, set_dirs):  # noqa: F811
    first = train_set(tmp_path, set_dirs, name="first", steps=2, gan_loss="none")
    again = train_set(tmp_path, set_dirs, name="again", steps=0, gan_loss="none", init=str(first))
    a, b = load_model_weights(first), load_model_weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)  # no steps: the starting weights, unchanged
    assert read_model_config(again)["training"]["init"] == str(first)
    with pytest.raises(AtelierError, match="^--init .*architecture .* differs from this run's"):
        train_set(tmp_path, set_dirs, name="wide", steps=0, gan_loss="none", init=str(first), width=16)
    config = read_model_config(first)
    config["condition"]["styles"] = ["waves", "dots"]
    (first / "config.json").write_text(__import__("json").dumps(config))
    with pytest.raises(AtelierError, match="its styles .* are not this run's"):
        train_set(tmp_path, set_dirs, name="swapped", steps=0, gan_loss="none", init=str(first))
    with pytest.raises(AtelierError, match="model folder not found"):
        train_set(tmp_path, set_dirs, name="none", steps=0, gan_loss="none", init=str(tmp_path / "nowhere"))
