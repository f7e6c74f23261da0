"""The lite encoder: contract, model-folder round trip, the bundled weights, bad encoder files, the lite method."""

import json

import pytest
import torch

from atelier import stylize
from atelier.folders import save_model_folder
from atelier.cli import main
from atelier.errors import AtelierError
from atelier.features.lite import BUNDLED, KIND, build_lite, encoder_state, load_lite
from atelier.images import read_metadata, save_image
from conftest import make_image

STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def _folder(tmp_path, name="enc", arch=None, seed=3, kind=KIND, dtype=torch.float16):
    net = build_lite(arch, seed=seed)
    return save_model_folder(tmp_path / name, encoder_state(net), {"kind": kind, "architecture": dict(net.arch)},
                             "card", dtype=dtype), net


def test_levels_have_vgg_names_and_resolutions():
    net = load_lite("random")
    feats = net(torch.rand(1, 3, 64, 96), [*STYLE, "conv4_2"])
    for name, div in zip(STYLE, (1, 2, 4, 8, 16)):
        assert feats[name].shape[-2:] == (64 // div, 96 // div)
    assert feats["conv4_2"].shape[-2:] == (8, 12)
    assert net.default_content_layers == ("conv4_2",) and net.default_style_layers == STYLE
    assert net.is_random and net.identity == "lite:random(seed=0)"
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_forward_stops_at_the_deepest_requested_layer():
    net = load_lite("random")
    ran = []
    net.layers["conv3_1"].register_forward_hook(lambda *a: ran.append("conv3_1"))
    net(torch.rand(1, 3, 32, 32), ["conv2_1"])
    assert ran == []
    net(torch.rand(1, 3, 32, 32), ["conv3_1"])
    assert ran == ["conv3_1"]


def test_random_init_depends_on_the_seed_alone():
    a, b, c = build_lite(seed=1), build_lite(seed=1), build_lite(seed=2)
    assert torch.equal(a.layers["conv5_1"].weight, b.layers["conv5_1"].weight)
    assert not torch.equal(a.layers["conv5_1"].weight, c.layers["conv5_1"].weight)


def test_model_folder_round_trip_fp16_storage(tmp_path):
    folder, net = _folder(tmp_path)
    loaded = load_lite(str(folder))
    assert not loaded.is_random and loaded.identity.startswith("lite:enc(sha256:")
    x = torch.rand(1, 3, 32, 32)
    a, b = net(x, ["conv4_2"])["conv4_2"], loaded(x, ["conv4_2"])["conv4_2"]
    assert torch.allclose(a, b, rtol=1e-2, atol=5e-3)  # fp16 storage, fp32 compute
    assert loaded.layers["conv1_1"].weight.dtype == torch.float32


def test_other_architectures_round_trip(tmp_path):
    folder, _ = _folder(tmp_path, arch={"widths": [4, 4, 8, 8, 8], "convs": [1, 2, 1, 2, 1]})
    net = load_lite(str(folder))
    assert net.arch == {"widths": [4, 4, 8, 8, 8], "convs": [1, 2, 1, 2, 1]}
    assert "conv2_2" in net.layer_names


@pytest.mark.parametrize("case", ["missing", "other_kind", "wrong_shape", "corrupt", "bad_arch", "no_conv4_2"])
def test_bad_encoder_folders_give_one_line_errors(case, tmp_path):
    if case == "missing":
        folder, match = tmp_path / "nope", "not found"
    elif case == "other_kind":
        folder, _ = _folder(tmp_path, kind="student")
        match = "'student' model, not a 'lite_encoder'"
    else:
        folder, _ = _folder(tmp_path)
        config = json.loads((folder / "config.json").read_text())
        if case == "wrong_shape":
            config["architecture"]["widths"] = [16, 32, 64, 128, 128]
            match = "does not fit its stated architecture"
        elif case == "bad_arch":
            config["architecture"]["widths"] = [16, 32]
            match = "five positive whole"
        elif case == "no_conv4_2":
            config["architecture"]["convs"] = [1, 1, 2, 1, 1]
            match = "conv4_2"
        else:
            (folder / "model.safetensors").write_bytes(b"\x00" * 50)
            match = "unreadable"
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(AtelierError, match=match) as e:
        load_lite(str(folder))
    assert "\n" not in str(e.value)


def test_bundled_encoder_is_small_trained_and_loads():
    weights = BUNDLED / "model.safetensors"
    assert weights.is_file(), "the bundled lite encoder must ship in src/atelier/weights/lite"
    assert weights.stat().st_size <= 1.5 * 1024 * 1024
    config = json.loads((BUNDLED / "config.json").read_text())
    assert config["kind"] == KIND and config["architecture"]["type"] == "effnet"
    assert config["training"]["source"].startswith("efficientnet-lite0:imagenet(")
    net = load_lite()
    assert net.identity.startswith("lite:bundled(sha256:") and not net.is_random
    assert {"b7_dw", "b11_dw"} <= set(net.layer_names)
    card = (BUNDLED / "MODEL_CARD.md").read_text()
    assert "Apache-2.0" in card


def test_lite_is_the_default_method_and_runs_offline(tmp_path):
    content, style = make_image(24, 32, 1), make_image(32, 32, 2)
    r = stylize(content, style, size=32, iterations=3, scales="none")
    assert r.method == "lite" and r.metadata["weights"].startswith("lite:bundled")
    assert r.metadata["random_weights"] is False and r.evaluations == 3
    assert r.tensor.shape == (1, 3, 24, 32) and not torch.equal(r.tensor, content)


def test_lite_model_option_picks_another_encoder(tmp_path):
    folder, _ = _folder(tmp_path)
    content, style = make_image(24, 32, 1), make_image(32, 32, 2)
    r = stylize(content, style, method="lite", lite_model=str(folder), size=32, iterations=2, scales="none")
    assert r.metadata["weights"].startswith("lite:enc(")
    r = stylize(content, style, method="lite", lite_model="random", size=32, iterations=2, scales="none")
    assert r.metadata["random_weights"] is True


def test_cli_stylize_defaults_to_lite(tmp_path, capsys):
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    save_image(make_image(24, 32, 1), content)
    save_image(make_image(32, 32, 2), style)
    assert main(["stylize", str(content), "-s", str(style), "-o", str(out), "--size", "32", "--iterations", "2",
                 "-q"]) == 0
    assert read_metadata(out)["method"] == "lite"
    assert main(["stylize", str(content), "-s", str(style), "-o", str(tmp_path / "x.png"), "--lite-model",
                 str(tmp_path / "missing"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model folder not found" in err
    assert not (tmp_path / "x.png").exists()
