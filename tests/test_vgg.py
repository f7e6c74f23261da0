"""VGG19 feature net and weight resolution, with state dicts built here (no download, no home directory)."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from atelier.errors import AtelierError
from atelier.features import vgg
from atelier.features.vgg import VGG19_FILENAME, VGG19_URL, fetch_vgg19, find_vgg19_weights, load_vgg19

BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
TV_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)  # torchvision's vgg19.features


def _conv_pairs(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    pairs, cin = [], 3
    for n, width in BLOCKS:
        for _ in range(n):
            w = torch.randn(width, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
            pairs.append((w, torch.randn(width, generator=g) * 0.01))
            cin = width
    return pairs


@functools.lru_cache(maxsize=None)
def tv_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's layout: exactly features.{conv index}.weight/bias for the 16 convs."""
    sd = {}
    for i, (w, b) in zip(TV_CONV_INDICES, _conv_pairs(seed)):
        sd[f"features.{i}.weight"], sd[f"features.{i}.bias"] = w, b
    return sd


@functools.lru_cache(maxsize=None)
def normalised_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """pytorch-AdaIN's nn.Sequential: Conv2d(3,3,1), then per conv ReflectionPad2d, Conv2d, ReLU; MaxPool per block
    except after the last; so the keys are 0, 2, 5, 9, 12, 16, ... 51 (17 convs)."""
    g = torch.Generator().manual_seed(seed + 1000)
    sd = {"0.weight": torch.randn(3, 3, 1, 1, generator=g) * 50, "0.bias": torch.randn(3, generator=g) * 50}
    index, pairs = 1, iter(_conv_pairs(seed))
    for block, (n, _) in enumerate(BLOCKS):
        for _ in range(n):
            w, b = next(pairs)
            sd[f"{index + 1}.weight"], sd[f"{index + 1}.bias"] = w / 100, b  # pad, conv, relu
            index += 3
        index += 1 if block < len(BLOCKS) - 1 else 0  # pool
    return sd


def convs_of(net: vgg.VGG19) -> list[nn.Conv2d]:
    return [m for name, m in net.layers.items() if name.startswith("conv") for m in m.modules()
            if isinstance(m, nn.Conv2d)]


def save(sd: dict, path: Path) -> Path:
    torch.save(sd, path)
    return path


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def image(h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="session")
def place(tmp_path_factory):
    """place(kind, seed, dest): a saved state dict at dest (each saved once per session, then hard-linked)."""
    root, made = tmp_path_factory.mktemp("vgg-files"), {}
    builders = {"tv": tv_state_dict, "normalised": normalised_state_dict}

    def put(kind: str, seed: int, dest: Path) -> Path:
        if (kind, seed) not in made:
            made[kind, seed] = save(builders[kind](seed), root / f"{kind}{seed}.pth")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(made[kind, seed], dest)
        except OSError:
            shutil.copyfile(made[kind, seed], dest)
        return dest

    return put


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every location the loader looks at lives under tmp_path (on top of conftest's isolated_cache)."""
    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))
    monkeypatch.delenv("ATELIER_VGG_WEIGHTS", raising=False)
    return tmp_path


def known(monkeypatch, path: Path) -> None:
    """Make ``path`` the known torchvision ImageNet file for this test (its sha256 becomes the recorded one)."""
    monkeypatch.setattr(vgg, "IMAGENET_SHA256_PREFIX", hashlib.sha256(path.read_bytes()).hexdigest())


def cache_files() -> list[Path]:
    root = Path(os.environ["ATELIER_CACHE"])
    return sorted(root.rglob("*")) if root.exists() else []


def test_torchvision_layout_loads_and_is_labelled_by_its_file(tmp_path, place):
    sd = tv_state_dict(0)
    assert sorted(sd) == sorted(f"features.{i}.{p}" for i in TV_CONV_INDICES for p in ("weight", "bias"))
    path = place("tv", 0, tmp_path / "weights.pth")
    net = load_vgg19(str(path))
    assert net.identity == f"vgg19:file:weights.pth(sha256:{sha12(path)})" and not net.is_random
    assert len(convs_of(net)) == 13
    for conv, i in zip(convs_of(net), TV_CONV_INDICES):
        assert torch.equal(conv.weight, sd[f"features.{i}.weight"]) and torch.equal(conv.bias, sd[f"features.{i}.bias"])
        assert conv.padding == (1, 1)
    assert net.layer_names[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert net.layer_names[-3:] == ("pool4", "conv5_1", "relu5_1") and len(net.layer_names) == 13 * 2 + 4
    assert all(not m.inplace for m in net.modules() if isinstance(m, nn.ReLU))
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert cache_files() == []  # loading never writes the slim cache


def test_only_the_known_file_is_imagenet_and_only_fetch_caches_it(tmp_path, place, monkeypatch):
    path = place("tv", 0, tmp_path / "weights.pth")
    with pytest.raises(AtelierError) as info:  # a random torchvision-layout file is not ImageNet
        fetch_vgg19(str(path), progress=False)
    message = str(info.value)
    assert "\n" not in message and "not torchvision's ImageNet VGG19" in message and str(path) in message
    assert "--vgg-weights" in message and cache_files() == []

    known(monkeypatch, path)
    net = load_vgg19(str(path))
    assert net.identity == f"vgg19:torchvision-imagenet(sha256:{sha12(path)})"
    assert cache_files() == []  # still nothing: only fetch writes the cache
    slim = fetch_vgg19(str(path), progress=False)
    assert slim == vgg.slim_cache_path()
    with safe_open(str(slim), framework="pt") as f:
        assert len(list(f.keys())) == 26 and all(k.startswith("features.") for k in f.keys())
        assert f.metadata()["source"] == net.identity
    path.unlink()  # the second load must not need the original
    again = load_vgg19()
    assert again.identity == net.identity
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(convs_of(net), convs_of(again)))

    copy = tmp_path / "copy.safetensors"  # a slim copy elsewhere: its recorded label is only data
    shutil.copyfile(slim, copy)
    assert load_vgg19(str(copy)).identity == f"vgg19:file:copy.safetensors(sha256:{sha12(copy)})"


def test_a_cache_labelled_imagenet_from_another_file_loses_the_label(tmp_path, place, monkeypatch):
    """A slim cache written before the hash was checked may call any torchvision file ImageNet."""
    path = place("tv", 0, tmp_path / "weights.pth")
    known(monkeypatch, path)
    fetch_vgg19(str(path), progress=False)
    monkeypatch.setattr(vgg, "IMAGENET_SHA256_PREFIX", "dcbb9e9d")  # the real file's: the cached label is wrong
    slim = vgg.slim_cache_path()
    assert load_vgg19().identity == f"vgg19:file:{slim.name}(sha256:{sha12(slim)})"
    vgg._write_slim(vgg._random_weights(0))  # as benchmarks/bench_engines.py does: a random label claims nothing
    assert load_vgg19(str(slim)).identity == "vgg19:random(seed=0)"


def test_vgg_weights_given_a_random_file_leave_the_cache_empty_and_label_the_output(tmp_path, place):
    from atelier.cli import main
    from atelier.images import read_metadata, save_image

    path = place("tv", 5, tmp_path / "someone.pth")
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "out.png"
    save_image(image(24, 32), content)
    save_image(image(32, 32), style)
    args = ["stylize", str(content), "--style", str(style), "-o", str(out), "-m", "gatys", "--vgg-weights",
            str(path), "--iterations", "1", "--size", "32", "--scales", "none", "-q"]
    assert main(args) == 0
    assert read_metadata(out)["weights"] == f"vgg19:file:someone.pth(sha256:{sha12(path)})"
    assert cache_files() == []


def test_forward_shapes_and_imagenet_normalisation():
    net = load_vgg19("random")
    out = net(image(), ["conv1_1", "pool1", "conv4_2", "conv5_1"])
    assert set(out) == {"conv1_1", "pool1", "conv4_2", "conv5_1"}
    assert out["conv1_1"].shape == (1, 64, 32, 32) and out["pool1"].shape == (1, 64, 16, 16)
    assert out["conv4_2"].shape == (1, 512, 4, 4) and out["conv5_1"].shape == (1, 512, 2, 2)
    x = image()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = nn.functional.conv2d((x - mean) / std, net.layers["conv1_1"].weight, net.layers["conv1_1"].bias, padding=1)
    assert torch.allclose(net(x, ["conv1_1"])["conv1_1"], expected, atol=1e-5)


def test_normalised_layout(tmp_path, place):
    sd = normalised_state_dict(0)
    assert len([k for k in sd if k.endswith(".weight")]) == 17 and "51.weight" in sd and "42.weight" in sd
    path = place("normalised", 0, tmp_path / "vgg_normalised.pth")
    net = load_vgg19(str(path))
    assert net.identity == f"vgg19:normalised(vgg_normalised.pth,sha256:{sha12(path)})"
    keys = [k for k in sd if k.endswith(".weight")][1:14]
    for conv, key in zip(convs_of(net), keys):
        assert torch.equal(conv.weight, sd[key]) and conv.padding == (0, 0)
    assert all(isinstance(net.layers[n][0], nn.ReflectionPad2d) for n in net.layer_names if n.startswith("conv"))
    x = image()
    # the leading 1x1 conv is the whole input conversion: no ImageNet mean/std on top
    assert torch.allclose(net._normalize(x), nn.functional.conv2d(x, sd["0.weight"], sd["0.bias"]), atol=1e-4)
    out = net(x, ["conv4_2", "relu5_1"])
    assert out["conv4_2"].shape == (1, 512, 4, 4) and out["relu5_1"].shape == (1, 512, 2, 2)
    assert not vgg.slim_cache_path().exists()  # load does not cache the normalised net under the ImageNet name

    slim = fetch_vgg19(str(path), progress=False)
    assert slim == vgg.slim_normalised_cache_path()
    with safe_open(str(slim), framework="pt") as f:
        assert len(list(f.keys())) == 28 and "0.weight" in f.keys() and "42.weight" in f.keys()
    path.unlink()
    again = load_vgg19()
    assert again.identity == net.identity and again.variant == "normalised"
    assert torch.equal(again.input_conv.weight, sd["0.weight"])


def test_nested_state_dict_with_classifier(tmp_path):
    sd = dict(_head(26), **{"classifier.0.weight": torch.zeros(4, 8), "classifier.0.bias": torch.zeros(4)})
    net = load_vgg19(str(save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pt")))
    assert torch.equal(convs_of(net)[-1].weight, sd["features.28.weight"])


def test_forward_runs_only_as_deep_as_needed():
    net = load_vgg19("random")
    calls: list[str] = []
    for name, module in net.layers.items():
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
    net(image(), ["conv1_1"])
    assert calls == ["conv1_1"]
    calls.clear()
    net(image(), ["relu2_1", "conv1_2"])
    assert calls[-1] == "relu2_1" and "conv2_2" not in calls


def test_random_weights_are_seeded_and_labelled():
    state = torch.get_rng_state()
    a, b, c = load_vgg19("random", seed=3), load_vgg19("RANDOM", seed=3), load_vgg19("random", seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert a.identity == "vgg19:random(seed=3)" and a.is_random and c.identity == "vgg19:random(seed=4)"
    assert all(torch.equal(x.weight, y.weight) for x, y in zip(convs_of(a), convs_of(b)))
    assert not torch.equal(convs_of(a)[0].weight, convs_of(c)[0].weight)
    assert all(float(conv.bias.abs().max()) == 0 for conv in convs_of(a))
    assert not vgg.slim_cache_path().exists()  # random weights are never cached


def test_resolution_order(tmp_path, monkeypatch, place):
    def first_weight(net):
        return convs_of(net)[0].weight

    hub = vgg.hub_checkpoint_path()
    hub.parent.mkdir(parents=True)
    place("tv", 3, hub)
    assert find_vgg19_weights()[0] == str(hub)
    assert torch.equal(first_weight(load_vgg19()), tv_state_dict(3)["features.0.weight"])

    assert load_vgg19().identity == f"vgg19:file:{VGG19_FILENAME}(sha256:{sha12(hub)})"  # its name is no proof
    c = place("tv", 2, tmp_path / "c.pth")
    known(monkeypatch, c)
    fetch_vgg19(str(c))  # cache now beats the hub file
    assert find_vgg19_weights()[0] == str(vgg.slim_cache_path())
    assert torch.equal(first_weight(load_vgg19()), tv_state_dict(2)["features.0.weight"])

    monkeypatch.setenv("ATELIER_VGG_WEIGHTS", str(place("tv", 1, tmp_path / "b.pth")))
    assert torch.equal(first_weight(load_vgg19()), tv_state_dict(1)["features.0.weight"])

    explicit = load_vgg19(str(place("tv", 0, tmp_path / "a.pth")))
    assert torch.equal(first_weight(explicit), tv_state_dict(0)["features.0.weight"])

    monkeypatch.setenv("ATELIER_VGG_WEIGHTS", "random")
    assert find_vgg19_weights()[0] == "random" and load_vgg19().is_random

    monkeypatch.setenv("ATELIER_VGG_WEIGHTS", str(tmp_path / "gone.pth"))  # a named file never falls through
    assert find_vgg19_weights()[0] is None
    with pytest.raises(AtelierError, match="not found"):
        load_vgg19()


def test_nothing_found_says_what_to_do():
    path, reason = find_vgg19_weights()
    assert path is None and VGG19_FILENAME in reason
    with pytest.raises(AtelierError) as info:
        load_vgg19()
    message = str(info.value)
    assert "\n" not in message and VGG19_FILENAME in message and VGG19_URL in message
    assert "--vgg-weights random" in message and "ATELIER_VGG_WEIGHTS" in message


def _head(n_keys: int) -> dict[str, torch.Tensor]:
    # the checks run in key order, so a truncated dict reaches the planted fault before the layer count matters
    return dict(list(tv_state_dict(0).items())[:n_keys])


def _wrong_shape(tmp_path: Path) -> Path:
    sd = _head(8)
    sd["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    return save(sd, tmp_path / "bad.pth")


def _nan(tmp_path: Path) -> Path:
    sd = _head(8)
    sd["features.7.bias"] = torch.full((128,), float("nan"))
    return save(sd, tmp_path / "nan.pth")


def _batchnorm(tmp_path: Path) -> Path:  # vgg19_bn: a BN weight sits where the second conv should be
    return save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64),
                 "features.1.weight": torch.ones(64), "features.1.bias": torch.zeros(64)}, tmp_path / "bn.pth")


def _garbage(suffix: str):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / f"garbage{suffix}"
        path.write_bytes(bytes(range(256)) * 40)
        return path
    return make


@pytest.mark.parametrize("make, fragment", [
    (_wrong_shape, "wrong shape for VGG19: features.5.weight"),
    (_nan, "non-finite values"),
    (_batchnorm, "wrong shape for VGG19: features.1.weight"),
    (lambda p: save({"encoder.weight": torch.zeros(3)}, p / "other.pth"), "not a VGG19 layout"),
    (lambda p: save(torch.zeros(3), p / "tensor.pth"), "not a VGG19 state dict"),
    (lambda p: save(_head(20), p / "short.pth"), "only 10 VGG19 conv layers"),
    (_garbage(".pth"), "could not read"),
    (_garbage(".safetensors"), "could not read"),
    (lambda p: p / "missing.pth", "not found"),
    (lambda p: p, "is a directory"),
])
def test_bad_weight_files_give_one_line_errors(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(AtelierError) as info:
        load_vgg19(str(path))
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message
    assert not vgg.slim_cache_path().exists()


def test_layers_and_pooling():
    net = load_vgg19("random")
    with pytest.raises(AtelierError, match="conv4_2.*relu5_1"):
        net(image(), ["conv6_1"])
    avg = load_vgg19("random", pooling="avg")
    assert isinstance(avg.layers["pool1"], nn.AvgPool2d) and isinstance(net.layers["pool1"], nn.MaxPool2d)
    assert not torch.allclose(net(image(), ["conv2_1"])["conv2_1"], avg(image(), ["conv2_1"])["conv2_1"])
    with pytest.raises(AtelierError, match="unknown pooling 'median'; choose from: max, avg"):
        load_vgg19("random", pooling="median")
    assert load_vgg19("random", device="cpu").layers["conv1_1"].weight.device.type == "cpu"


def test_download_uses_hub_with_hash_check(monkeypatch):
    calls = []

    def fake(url, **kwargs):
        calls.append((url, kwargs))
        return tv_state_dict(0)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    with pytest.raises(AtelierError):
        load_vgg19()  # no download unless asked
    assert not calls
    net = load_vgg19(download=True, progress=False)
    (url, kwargs), = calls
    assert url == VGG19_URL and kwargs["check_hash"] is True and kwargs["weights_only"] is True
    assert kwargs["progress"] is False
    assert net.identity == "vgg19:torchvision-imagenet(sha256:dcbb9e9d)"
    assert cache_files() == []  # a load never writes the slim cache, even after a download

    assert fetch_vgg19(progress=False) == vgg.slim_cache_path() and len(calls) == 2
    assert load_vgg19().identity == net.identity


def test_download_failure_is_one_line(monkeypatch):
    def offline(url, **kwargs):
        raise OSError("network is unreachable\nmore detail")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(AtelierError) as info:
        fetch_vgg19()
    assert "\n" not in str(info.value) and VGG19_URL in str(info.value) and "unreachable" in str(info.value)


def test_an_unwritable_cache_bothers_only_fetch(tmp_path, monkeypatch, place):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("ATELIER_CACHE", str(blocker / "cache"))
    path = place("tv", 0, tmp_path / "w.pth")
    known(monkeypatch, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading does not even try to write
        net = load_vgg19(str(path))
    assert net.identity.startswith("vgg19:torchvision-imagenet")
    with pytest.raises(AtelierError, match="ATELIER_CACHE"):
        fetch_vgg19(str(path))
    assert list(tmp_path.glob("**/*.tmp")) == []
