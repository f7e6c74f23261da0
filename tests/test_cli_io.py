"""The command line's pipes (issue 15): ``atelier stylize -`` reads the photo from stdin, ``-o -`` writes the picture
to stdout (``--format``), ``--json`` prints one JSON object for a script (stylize, a folder, bench), and nothing else
ever reaches stdout when it carries data. Bad combinations and bad stdin are one line and exit 2."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from atelier import api
from atelier.cli import main
from atelier.images import METADATA_KEY, open_image, save_image, tensor_to_pil
from conftest import make_image

STUDENT = ["--model", "starry-tiny", "--size", "32"]


def png_bytes(h: int = 40, w: int = 56, seed: int = 1) -> bytes:
    buf = io.BytesIO()
    tensor_to_pil(make_image(h, w, seed)).save(buf, format="PNG")
    return buf.getvalue()


def run_cli(args, stdin: bytes, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ATELIER_CACHE=str(tmp_path / "c"), TORCH_HOME=str(tmp_path / "t"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "atelier", *args], input=stdin, capture_output=True, env=env,
                          timeout=120)


def feed_stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_a_pipe_in_and_a_pipe_out(tmp_path):
    """stdin to stdout through real pipes: the picture's bytes alone on stdout, the human line on stderr."""
    photo = png_bytes()
    done = run_cli(["stylize", "-", "-o", "-", *STUDENT], photo, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    picture = Image.open(io.BytesIO(done.stdout))
    picture.load()
    expected = api.stylize(open_image(photo), model="starry-tiny", size=32).image
    assert np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(expected))  # the library's own picture
    meta = json.loads(picture.info[METADATA_KEY])
    assert meta["content"] == "stdin" and meta["method"] == "student:starry-tiny"
    assert b"wrote the PNG picture to stdout" in done.stderr and b"Traceback" not in done.stderr
    # Empty stdin, and bytes that are not an image: one line, exit 2, nothing on stdout.
    for data, message in ((b"", b"stdin is empty"), (b"hello, not a picture", b"stdin is not an image")):
        bad = run_cli(["stylize", "-", "-o", "-", *STUDENT], data, tmp_path)
        assert bad.returncode == 2 and bad.stdout == b""
        assert bad.stderr.startswith(b"atelier: error: " + message) and bad.stderr.count(b"\n") == 1, bad.stderr


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_format_chooses_the_bytes_on_stdout(fmt, magic, monkeypatch, capsysbinary, tmp_path):
    photo = tmp_path / "p.png"
    save_image(make_image(40, 56, 1), photo)
    assert main(["stylize", str(photo), "-o", "-", "--format", fmt, *STUDENT]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out.startswith(magic)
    with Image.open(io.BytesIO(captured.out)) as im:
        assert im.size == (32, 23) and im.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert captured.err.decode().startswith(f"wrote the {fmt.upper()} picture to stdout")
    assert not list(tmp_path.glob("*.json"))  # no sidecar: a pipe has nowhere to put one


def test_stdin_to_a_file_keeps_the_files_format(monkeypatch, tmp_path, capsys):
    feed_stdin(monkeypatch, png_bytes())
    out = tmp_path / "o.jpg"
    assert main(["stylize", "-", "-o", str(out), *STUDENT]) == 0
    assert Image.open(out).format == "JPEG"
    assert f"wrote {out}" in capsys.readouterr().out  # no data on stdout: the human line stays there


@pytest.mark.parametrize("extra, message", [
    (["-o", "-", "--json"], "--json and -o - both write to stdout"),
    (["-o", "{tmp}/o.png", "--format", "jpeg"], "--format jpeg is for -o - (stdout); {tmp}/o.png is PNG"),
    (["-o", "-", "--save-every", "2", "-m", "lite", "-s", "{tmp}/p.png"], "--save-every writes files"),
    (["-o", "-", "--format", "gif"], "invalid choice"),
])
def test_bad_combinations_are_one_line(extra, message, tmp_path, capsys):
    photo = tmp_path / "p.png"
    save_image(make_image(20, 20), photo)
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    try:
        code = main(["stylize", str(photo), "--model", "starry-tiny", *args] if "-m" not in args
                    else ["stylize", str(photo), *args])
    except SystemExit as e:  # argparse's own refusal (a choice it does not know)
        code = e.code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "" and message.replace("{tmp}", str(tmp_path)) in err[-1]
    assert not (tmp_path / "o.png").exists()


def test_a_folder_cannot_go_to_stdout(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    save_image(make_image(20, 20), tmp_path / "in" / "a.png")
    assert main(["stylize", str(tmp_path / "in"), "-o", "-", *STUDENT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("atelier: error: --output - writes one picture to stdout") and "\n" not in err


def test_json_for_one_picture(tmp_path, capsys):
    photo = tmp_path / "p.png"
    save_image(make_image(40, 56, 1), photo)
    out = tmp_path / "o.webp"
    assert main(["stylize", str(photo), "-o", str(out), "--json", "--strength", "0.5", *STUDENT]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1  # one JSON object, nothing else
    record = json.loads(captured.out)
    assert record["input"] == str(photo) and record["output"] == str(out) and record["format"] == "webp"
    assert record["size"] == [23, 32] and record["method"] == "student:starry-tiny" and record["styles"] == []
    assert record["strength"] == 0.5 and record["strength_applied"].startswith("pixel blend")
    assert record["evaluations"] == 0 and record["seconds"] >= 0 and record["device"] == "cpu"
    assert record["options"]["size"] == 32 and record["weights"].startswith("student:starry-tiny")
    assert f"wrote {out}" in captured.err  # the human line moved to stderr


def test_json_for_a_folder_lists_results_and_skipped_files(tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    save_image(make_image(20, 30, 1), folder / "a.png")
    save_image(make_image(30, 20, 2), folder / "b.jpg")
    (folder / "notes.png").write_text("not a picture")
    assert main(["stylize", str(folder), "-o", str(out), "--json", "-q", *STUDENT]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["input"] == str(folder) and record["output"] == str(out) and record["written"] == 2
    assert record["method"] == "student:starry-tiny" and record["interrupted"] is False
    results = {os.path.basename(r["input"]): r for r in record["results"]}
    assert set(results) == {"a.png", "b.jpg"}
    assert results["a.png"]["output"] == str(out / "a.png") and results["a.png"]["size"] == [21, 32]
    assert results["b.jpg"]["size"] == [32, 21] and results["b.jpg"]["format"] == "png"
    assert [s["input"] for s in record["skipped"]] == ["notes.png"] and record["skipped"][0]["reason"]
    assert "skipped notes.png" in captured.err and "wrote 2 image(s)" in captured.err


def test_json_for_an_engine_with_progress_off_stdout(tmp_path, capsys):
    photo, style = tmp_path / "p.png", tmp_path / "s.png"
    save_image(make_image(40, 56, 1), photo)
    save_image(make_image(24, 24, 2), style)
    assert main(["stylize", str(photo), "-s", str(style), "-o", str(tmp_path / "o.png"), "--json", "-m", "lite",
                 "--size", "48", "--iterations", "2", "--scales", "none"]) == 0  # progress bar on
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["method"] == "lite" and record["evaluations"] == 2 and record["styles"] == ["s.png"]
    assert record["effective_style_weight"] == record["style_weight"] == record["options"]["style_weight"]
