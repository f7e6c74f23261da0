"""Teachers and ``prepare`` (pairs folders) on tiny images: layout, resume after a kill, shards, refusals, magenta."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from atelier import teachers
from atelier.errors import AtelierError
from atelier.files import sha256_file
from atelier.images import load_image, read_metadata, save_image
from atelier import options, registry
from atelier.teachers import make_teacher
from atelier.options import PrepareOptions, parse_shard, parse_teacher_options
from atelier.train.manifest import pair_id, read_manifest
from atelier.train.prepare import effective_shard, prepare

FAST = {"lite_model": "random", "iterations": 2, "scales": "none"}
KEYS = ["id", "content", "stylized", "source", "content_sha256", "style", "style_sha256", "teacher",
        "teacher_identity", "teacher_options", "seed", "size"]


def noise(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


@pytest.fixture
def data(tmp_path):
    content, styles = tmp_path / "content", tmp_path / "styles"
    content.mkdir()
    styles.mkdir()
    for i in range(6):
        save_image(noise(24, 32, i), content / f"photo{i}.png")
    for i in range(2):
        save_image(noise(32, 24, 100 + i), styles / f"art{i}.png")
    return content, styles


def run(tmp_path, data, out="pairs", **kw):
    content, styles = data
    options = {"content": str(content), "style": str(styles), "out": str(tmp_path / out), "size": 32,
               "teacher_options": dict(FAST), **kw}
    return prepare(progress=False, **options)


def manifest_lines(d: Path) -> list[dict]:
    lines = []
    for path in sorted(d.glob("manifest*.jsonl")):
        text = path.read_text()
        assert text == "" or text.endswith("\n")
        lines += [json.loads(x) for x in text.splitlines()]
    return lines


def test_prepare_writes_pairs_that_read_manifest_returns(tmp_path, data):
    logs = []
    summary = run(tmp_path, data, log=logs.append)
    d = tmp_path / "pairs"
    assert summary["done"] == 6 and summary["already"] == 0 and summary["skipped"] == {}
    assert summary["teacher_identity"] == "lite(lite:random(seed=0))"
    assert any("untrained random" in m for m in logs)
    records = read_manifest(d)
    assert len(records) == 6 and [r["id"] for r in records] == sorted(r["id"] for r in records)
    style_shas = {sha256_file(p) for p in data[1].iterdir()}
    for r in records:
        assert list(r) == KEYS
        assert r["id"] == pair_id(r["content_sha256"], r["style_sha256"])
        assert r["content_sha256"] == sha256_file(r["source"]) and r["style_sha256"] in style_shas
        assert r["content"] == f"content/{r['id']}.png" and r["stylized"] == f"stylized/{r['id']}.png"
        assert r["teacher"] == "lite" and r["teacher_options"] == {**FAST, "seed": 0} and r["size"] == [24, 32]
        c, s = load_image(d / r["content"]), load_image(d / r["stylized"])
        assert c.shape == s.shape == (1, 3, 24, 32)
        assert read_metadata(d / r["stylized"])["pair"]["id"] == r["id"]
    assert {r["source"] for r in records} == {str(p.resolve()) for p in data[0].iterdir()}
    settings = json.loads((d / "prepare.json").read_text())
    assert settings["teacher_identity"] == summary["teacher_identity"] and settings["size"] == 32
    # Running again finds everything done and writes nothing new.
    before = (d / "manifest.jsonl").read_bytes()
    again = run(tmp_path, data)
    assert again["done"] == 0 and again["already"] == 6
    assert (d / "manifest.jsonl").read_bytes() == before


def test_a_killed_run_resumes_without_duplicates_or_half_files(tmp_path, data, monkeypatch):
    real = teachers.OptimizeTeacher.stylize
    calls = {"n": 0}

    def dying(self, content, style):
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(self, content, style)

    monkeypatch.setattr(teachers.OptimizeTeacher, "stylize", dying)
    with pytest.raises(AtelierError, match="interrupted after 3 new pair"):
        run(tmp_path, data)
    d = tmp_path / "pairs"
    assert len(manifest_lines(d)) == 3
    monkeypatch.setattr(teachers.OptimizeTeacher, "stylize", real)
    # What a crash at other moments leaves behind: a torn manifest line, a half pair, an atomic write's temporary.
    with open(d / "manifest.jsonl", "ab") as f:
        f.write(b'{"id": "0123456789abcdef", "content": "con')
    save_image(noise(8, 8, 9), d / "content" / "feedfeedfeedfeed.png")
    (d / "stylized" / ".feedfeedfeedfeed.png.abc123.tmp").write_bytes(b"half a png")
    summary = run(tmp_path, data)
    assert summary["done"] == 3 and summary["already"] == 3
    lines = manifest_lines(d)
    ids = [x["id"] for x in lines]
    assert len(ids) == 6 and len(set(ids)) == 6
    for r in read_manifest(d):
        assert load_image(d / r["content"]).shape == load_image(d / r["stylized"]).shape
    on_disk = {p.name for sub in ("content", "stylized") for p in (d / sub).iterdir()}
    assert on_disk == {f"{i}.png" for i in ids}
    # The resumed folder holds exactly what an uninterrupted run makes.
    run(tmp_path, data, out="fresh")
    fresh = {r["id"]: r for r in read_manifest(tmp_path / "fresh")}
    assert set(fresh) == set(ids)
    for i in ids:
        assert torch.equal(load_image(d / f"stylized/{i}.png"), load_image(tmp_path / f"fresh/stylized/{i}.png"))


def test_shards_split_the_photographs_and_read_manifest_merges_them(tmp_path, data, monkeypatch):
    a = run(tmp_path, data, shard="0/2")
    b = run(tmp_path, data, shard="1/2")
    assert a["total"] == b["total"] == 3 and a["done"] == b["done"] == 3
    d = tmp_path / "pairs"
    assert sorted(p.name for p in d.glob("manifest*")) == ["manifest.0-of-2.jsonl", "manifest.1-of-2.jsonl"]
    names = sorted(p.name for p in data[0].iterdir())
    first = {Path(x["source"]).name for x in map(json.loads, (d / "manifest.0-of-2.jsonl").read_text().splitlines())}
    assert first == set(names[0::2])
    records = read_manifest(d)
    assert sorted(Path(r["source"]).name for r in records) == names
    # An unsharded run afterwards finds every pair done, whoever made it.
    assert run(tmp_path, data)["already"] == 6
    # torchrun: each process takes its part of the shard.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert effective_shard("") == (1, 2) and effective_shard("1/2") == (3, 4)
    assert run(tmp_path, data, out="ranked")["shard"] == "1/2"


@pytest.mark.parametrize("spec", ["3/2", "2/2", "-1/2", "1", "a/b", "1/0"])
def test_bad_shards_are_refused(spec):
    with pytest.raises(AtelierError, match="^shard must be I/N"):
        PrepareOptions.from_kwargs(content="c", style="s", out="o", shard=spec)


def test_shard_parsing():
    assert parse_shard("") == (0, 1) and parse_shard(" 2 / 5 ") == (2, 5)


@pytest.mark.parametrize("change, named", [({"size": 48}, "size"),
                                           ({"teacher_options": {**FAST, "iterations": 3}}, "teacher_options"),
                                           ({"seed": 1}, "seed")])
def test_other_settings_into_the_same_folder_are_refused(tmp_path, data, change, named):
    run(tmp_path, data, limit=1)
    with pytest.raises(AtelierError, match=f"other settings \\(.*\\b{named} ") as e:
        run(tmp_path, data, **change)
    assert "\n" not in str(e.value)


def test_other_styles_are_refused_but_limit_and_shard_may_change(tmp_path, data):
    run(tmp_path, data, limit=2)
    assert run(tmp_path, data, limit=4, shard="0/1")["already"] == 2
    one = next(data[1].iterdir())
    with pytest.raises(AtelierError, match="styles 2 style image"):
        run(tmp_path, (data[0], one))


def test_a_failed_run_does_not_block_the_corrected_rerun(tmp_path, data, monkeypatch):
    """The user's sequence: the teacher fails on the first photograph; the rerun with other options succeeds."""
    real = teachers.OptimizeTeacher.stylize

    def failing(self, content, style):
        raise AtelierError("the teacher cannot run with these options")

    monkeypatch.setattr(teachers.OptimizeTeacher, "stylize", failing)
    with pytest.raises(AtelierError, match="cannot run with these options"):
        run(tmp_path, data, teacher_options={**FAST, "iterations": 3})
    d = tmp_path / "pairs"
    assert not (d / "prepare.json").exists() and manifest_lines(d) == []
    monkeypatch.setattr(teachers.OptimizeTeacher, "stylize", real)
    summary = run(tmp_path, data)  # other teacher options than the failed run's
    assert summary["done"] == 6 and len(read_manifest(d)) == 6
    assert json.loads((d / "prepare.json").read_text())["teacher_options"] == {**FAST, "seed": 0}
    with pytest.raises(AtelierError, match="other settings"):  # once it holds pairs, the folder binds
        run(tmp_path, data, teacher_options={**FAST, "iterations": 3})


def test_a_prepare_json_beside_no_pair_binds_nothing(tmp_path, data):
    """What a failed run of an older version left: a prepare.json with other settings, and not one pair."""
    d = tmp_path / "pairs"
    for sub in ("content", "stylized"):
        (d / sub).mkdir(parents=True)
    (d / "manifest.jsonl").write_text("")
    (d / "prepare.json").write_text(json.dumps({"format": 1, "teacher": "lite", "teacher_identity": "lite(other)",
                                                "teacher_options": {"iterations": 9}, "size": 48, "seed": 0,
                                                "styles": []}))
    summary = run(tmp_path, data, limit=2)
    assert summary["done"] == 2
    settings = json.loads((d / "prepare.json").read_text())
    assert settings["size"] == 32 and settings["teacher_options"] == {**FAST, "seed": 0}
    assert run(tmp_path, data, limit=2)["already"] == 2


def test_a_folder_that_is_not_a_pairs_folder_is_refused(tmp_path, data):
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "thesis.txt").write_text("mine")
    with pytest.raises(AtelierError, match="not a pairs folder"):
        run(tmp_path, data)


def test_unreadable_photographs_are_skipped_and_counted(tmp_path, data):
    content = data[0]
    (content / "broken.jpg").write_bytes(b"not a jpeg")
    (content / "empty.png").write_bytes(b"")
    (content / "notes.txt").write_text("hello")
    save_image(noise(8, 10, 5), content / "tiny.png")
    logs = []
    summary = run(tmp_path, data, log=logs.append)
    assert summary["done"] == 6
    assert summary["skipped"] == {"unreadable or corrupt": 2, "not an image file name": 1, "smaller than 16 px": 1}
    assert "2 unreadable or corrupt" in logs[-1]


def test_a_folder_without_readable_photographs_is_an_error(tmp_path, data):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"x")
    (bad / "b.png").write_bytes(b"y")
    with pytest.raises(AtelierError, match=r"no readable photographs .* \(skipped: 2 unreadable or corrupt"):
        run(tmp_path, (bad, data[1]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AtelierError, match="no image files"):
        run(tmp_path, (empty, data[1]), out="other")


def test_read_manifest_errors_and_missing_files_are_redone(tmp_path, data):
    with pytest.raises(AtelierError, match="pairs folder not found"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(AtelierError, match="has no manifest.jsonl"):
        read_manifest(tmp_path / "plain")
    run(tmp_path, data, limit=3)
    d = tmp_path / "pairs"
    gone = read_manifest(d)[1]
    (d / gone["stylized"]).unlink()
    with pytest.raises(AtelierError, match=r"1 of 3 pairs .* missing files \(e\.g\. stylized/") as e:
        read_manifest(d)
    assert "\n" not in str(e.value)
    summary = run(tmp_path, data, limit=3)
    assert summary["done"] == 1 and summary["already"] == 2
    assert [r["id"] for r in read_manifest(d)] == sorted(r["id"] for r in read_manifest(d))
    assert len(read_manifest(d)) == 3


def test_teacher_options_parsing():
    assert parse_teacher_options("iterations=60,style_weight=20") == {"iterations": 60, "style_weight": 20}
    assert parse_teacher_options("style-weight=1e3,lite_model=random") == {"style_weight": 1000.0,
                                                                           "lite_model": "random"}
    assert parse_teacher_options("scales=128,256,iterations=5") == {"scales": "128,256", "iterations": 5}
    assert parse_teacher_options(None) == {} and parse_teacher_options("") == {}
    assert PrepareOptions.from_kwargs(content="c", style="s", out="o", teacher_options="tv_weight=0.5") \
        .teacher_options == {"tv_weight": 0.5}
    for bad, msg in (("iterations", "key=value"), ("=5", "misses a name"), ("a=1,a=2", "twice")):
        with pytest.raises(AtelierError, match=msg):
            parse_teacher_options(bad)


def test_prepare_options_defaults_and_refusals():
    o = PrepareOptions.from_kwargs(content="c", style="s", out="o")
    assert (o.teacher, o.size, o.teacher_options, o.limit, o.shard, o.seed, o.device) == \
        ("lite", 256, {}, 0, "", 0, "auto")
    with pytest.raises(AtelierError, match="^teacher must be one of gatys, lite, effnet, magenta"):
        PrepareOptions.from_kwargs(content="c", style="s", out="o", teacher="picasso")
    with pytest.raises(AtelierError, match="unknown prepare option"):
        PrepareOptions.from_kwargs(content="c", style="s", out="o", iterations=3)
    with pytest.raises(AtelierError, match="^content is required"):
        PrepareOptions.from_kwargs(style="s", out="o")
    with pytest.raises(AtelierError, match="^size must be"):
        PrepareOptions.from_kwargs(content="c", style="s", out="o", size=8)


def test_the_prepare_choices_are_the_registered_teachers():
    assert options.TEACHERS == tuple(registry.names("teacher"))
    assert PrepareOptions.__dataclass_fields__["teacher"].metadata["choices"] == options.TEACHERS


def test_teachers_by_name():
    assert tuple(registry.names("teacher")) == ("gatys", "lite", "effnet", "magenta")
    for name in ("gatys", "lite"):  # every registered optimisation teacher builds the engine it is named after
        options = {**{k: v for k, v in FAST.items() if k != "lite_model"}, "vgg_weights": "random"} \
            if name == "gatys" else FAST
        teacher = make_teacher(name, options)
        assert teacher.name == name and teacher.options["iterations"] == FAST["iterations"]
    with pytest.raises(AtelierError, match="unknown teacher 'picasso'; choose from: gatys, lite, effnet, magenta"):
        make_teacher("picasso")
    with pytest.raises(AtelierError, match="lite teacher: unknown option.*bogus.*valid options"):
        make_teacher("lite", {**FAST, "bogus": 1})
    with pytest.raises(AtelierError, match="lite teacher: iterations must be"):
        make_teacher("lite", {**FAST, "iterations": 0})
    with pytest.raises(AtelierError, match="teacher option size is not accepted"):
        make_teacher("lite", {**FAST, "size": 64})
    with pytest.raises(AtelierError, match="lite teacher: vgg_weights does not apply to optimisation method lite"):
        make_teacher("lite", {**FAST, "vgg_weights": "random"})  # issue 12: refused, not silently ignored
    t = make_teacher("lite", {**FAST, "content_layers": "conv4_2,conv5_1"}, device="cpu", seed=3)
    assert t.options["content_layers"] == ["conv4_2", "conv5_1"] and t.options["seed"] == 3
    out = t.stylize(noise(20, 28, 0), noise(40, 40, 1))
    assert out.shape == (1, 3, 20, 28) and 0 <= out.min() and out.max() <= 1


def test_magenta_without_tensorflow_says_how_to_install_it(tmp_path, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    with pytest.raises(AtelierError) as e:
        make_teacher("magenta", {"handle": str(tmp_path)})  # a handle is the TensorFlow path
    assert str(e.value) == ("the magenta teacher's TensorFlow path (a handle) needs TensorFlow: pip install "
                            "'atelier[magenta-tf]' (without a handle it runs offline in torch: atelier[magenta])")
    with pytest.raises(AtelierError, match="needs TensorFlow"):
        run(tmp_path, data, teacher="magenta", teacher_options={"handle": str(tmp_path)})
    with pytest.raises(AtelierError, match="unknown magenta teacher option.*iterations; valid: handle, style_size, "
                                           "weights"):
        make_teacher("magenta", {"iterations": 3})
    with pytest.raises(AtelierError, match="handle .* and weights .* exclude each other"):
        make_teacher("magenta", {"handle": str(tmp_path), "weights": "random"})


def test_magenta_teacher_runs_offline_in_torch_and_makes_pairs(tmp_path, data, monkeypatch):
    """No handle: the torch port (no TensorFlow anywhere); seeded random weights keep it independent of the extra."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    teacher = make_teacher("magenta", {"weights": "random"}, device="cpu")
    assert teacher.identity == "magenta(magenta-arbitrary-v1:random(seed=0))" and teacher.random_weights
    assert teacher.options == {"style_size": 256, "weights": "random"}
    out = teacher.stylize(noise(20, 28, 0), noise(40, 30, 1))
    assert out.shape == (1, 3, 20, 28) and 0 <= float(out.min()) <= float(out.max()) <= 1
    summary = run(tmp_path, data, teacher="magenta", teacher_options={"weights": "random"})
    assert summary["done"] == 6 and summary["teacher_identity"] == teacher.identity
    assert all(r["teacher"] == "magenta" for r in read_manifest(tmp_path / "pairs"))


def test_magenta_call_convention_with_a_stand_in_tensorflow(tmp_path, monkeypatch):
    """The NHWC conversion, the 256x256 style and outputs[0], checked against a numpy stand-in for TensorFlow."""
    seen = {}

    class Tensor:
        def __init__(self, a):
            self.a = a

        def numpy(self):
            return self.a

    def model(content, style):
        seen["content"], seen["style"] = content.a.shape, style.a.shape
        return [Tensor(content.a * 0.5 + style.a.mean(axis=(1, 2), keepdims=True) * 0.5)]

    tf = types.ModuleType("tensorflow")
    tf.float32 = np.float32
    tf.constant = lambda a, dtype=None: Tensor(np.asarray(a, dtype=dtype))
    tf.saved_model = types.SimpleNamespace(load=lambda path: model)
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    saved = tmp_path / "magenta_model"
    saved.mkdir()
    teacher = make_teacher("magenta", {"handle": str(saved)})
    assert teacher.identity == "magenta(magenta_model)"
    assert teacher.options == {"handle": str(saved), "style_size": 256}
    content, style = noise(20, 28, 0), noise(40, 30, 1)
    out = teacher.stylize(content, style)
    assert seen == {"content": (1, 20, 28, 3), "style": (1, 256, 256, 3)}
    from atelier.images import resize_to

    expected = content * 0.5 + resize_to(style, (256, 256)).mean(dim=(2, 3), keepdim=True) * 0.5
    assert out.shape == (1, 3, 20, 28) and torch.allclose(out, expected, atol=1e-6)


def test_magenta_teacher_loads_a_saved_model_by_path(tmp_path):
    tf = pytest.importorskip("tensorflow")

    class Stand(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, content, style):
            return [content * 0.5 + tf.reduce_mean(style, axis=[1, 2], keepdims=True) * 0.5]

    path = tmp_path / "saved"
    tf.saved_model.save(Stand(), str(path))
    teacher = make_teacher("magenta", {"handle": str(path)})
    assert teacher.identity.startswith("magenta(saved, sha256:")
    content, style = noise(20, 28, 0), noise(40, 30, 1)
    out = teacher.stylize(content, style)
    from atelier.images import resize_to

    expected = content * 0.5 + resize_to(style, (256, 256)).mean(dim=(2, 3), keepdim=True) * 0.5
    assert out.shape == (1, 3, 20, 28) and torch.allclose(out, expected, atol=1e-5)
