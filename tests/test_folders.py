import json

import pytest
import torch
from torch import nn

from atelier.errors import AtelierError
from atelier.folders import FORMAT_VERSION, load_into, load_model_weights, read_model_config, save_model_folder
from atelier.train.resume import load_resume, save_resume


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


CONFIG = {"kind": "test", "architecture": {"width": 4}, "training": {"steps": 3}}


def test_round_trip_fp32_and_fp16(tmp_path):
    m = net()
    folder = save_model_folder(tmp_path / "m", m.state_dict(), CONFIG, card="# card")
    cfg = read_model_config(folder, kind="test")
    assert cfg["format_version"] == FORMAT_VERSION and cfg["architecture"] == {"width": 4} and cfg["atelier_version"]
    m2 = load_into(net(), load_model_weights(folder), folder)
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert (folder / "MODEL_CARD.md").read_text() == "# card\n"

    half = save_model_folder(tmp_path / "h", m.state_dict(), CONFIG, dtype=torch.float16)
    sd = load_model_weights(half)
    assert all(v.dtype == torch.float32 for v in sd.values())  # widened for computation
    assert (half / "model.safetensors").stat().st_size < (folder / "model.safetensors").stat().st_size
    assert read_model_config(half)["storage_dtype"] == "float16"


def test_replace_existing_leaves_no_temp(tmp_path):
    save_model_folder(tmp_path / "m", net().state_dict(), CONFIG)
    save_model_folder(tmp_path / "m", net().state_dict(), {**CONFIG, "training": {"steps": 9}})
    assert read_model_config(tmp_path / "m")["training"]["steps"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_model_folder_gets_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        folder = save_model_folder(tmp_path / "m", net().state_dict(), CONFIG)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # not mkdtemp's private 0700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}


def test_failed_write_keeps_old_folder(tmp_path, monkeypatch):
    save_model_folder(tmp_path / "m", net().state_dict(), CONFIG)
    import atelier.folders as ck

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(RuntimeError):
        save_model_folder(tmp_path / "m", net().state_dict(), CONFIG)
    assert read_model_config(tmp_path / "m")["kind"] == "test"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize("case", ["missing", "file", "no-config", "bad-json", "other-kind", "newer", "no-weights",
                                  "bad-weights"])
def test_bad_folders_refused_one_line(tmp_path, case):
    folder = save_model_folder(tmp_path / "m", net().state_dict(), CONFIG)
    cfg = json.loads((folder / "config.json").read_text())
    kind = "test"
    if case == "missing":
        folder = tmp_path / "nope"
    elif case == "file":
        folder = tmp_path / "f.txt"
        folder.write_text("x")
    elif case == "no-config":
        (folder / "config.json").unlink()
    elif case == "bad-json":
        (folder / "config.json").write_text("{not json")
    elif case == "other-kind":
        kind = "student"
    elif case == "newer":
        (folder / "config.json").write_text(json.dumps({**cfg, "format_version": FORMAT_VERSION + 1}))
    elif case == "no-weights":
        (folder / "model.safetensors").unlink()
    elif case == "bad-weights":
        (folder / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(AtelierError) as e:
        read_model_config(folder, kind=kind)
        load_model_weights(folder)
    assert "\n" not in str(e.value)


def test_load_into_names_mismatch(tmp_path):
    sd = net().state_dict()
    sd["0.weight"] = torch.zeros(5, 3, 3, 3)
    with pytest.raises(AtelierError, match="0.weight"):
        load_into(net(), sd, "m")
    sd = net().state_dict()
    sd["2.bias"] = torch.full((2,), float("nan"))
    with pytest.raises(AtelierError, match="non-finite"):
        load_into(net(), sd, "m")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_round_trip_is_safe(tmp_path):
    m = net()
    opt = torch.optim.Adam(m.parameters())
    m(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    state = {"step": 7, "model": m.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
             "config": {"lr": 2e-4, "layers": ["a", "b"]}}
    path = save_resume(tmp_path / "last.pt", state)
    back = load_resume(path)
    assert back["step"] == 7 and back["config"]["layers"] == ["a", "b"]
    opt2 = torch.optim.Adam(net().parameters())
    opt2.load_state_dict(back["optimizer"])
    with pytest.raises(AtelierError, match="afresh"):
        load_resume(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(AtelierError):
        load_resume(tmp_path / "bad.pt")
