"""atelier video: probing, streaming through a one-pass method, the stabilisers, resume, and one-line errors."""

from __future__ import annotations

import errno
import json
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("cv2")

from atelier.cli import main  # noqa: E402
from atelier.errors import AtelierError  # noqa: E402
from atelier.video import io, stylize_video  # noqa: E402
from atelier.video.flow import Flow, consistent, gray, warp, warping_error  # noqa: E402
from atelier.video.synthetic import pan_zoom, write_video  # noqa: E402
from atelier.video.temporal import make_stabilizer  # noqa: E402


def _photo(seed: int = 0, h: int = 240, w: int = 320) -> np.ndarray:
    """A smooth random scene with edges (flow needs texture), uint8 RGB."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (3, 3), 0.8)


@pytest.fixture(scope="module")
def clip_frames():
    return pan_zoom(_photo(), 12, (96, 64), pan=(2.0, 1.0), zoom=0.003, noise=2.0)


@pytest.fixture
def clip(tmp_path, clip_frames):
    return write_video(tmp_path / "in.mp4", clip_frames[0], 25, audio_seconds=0.5)


def _decode(path):
    info = io.probe(path)
    return info, [f for _, f in io.frames(path, info)]


def test_probe_reads_size_rate_frames_and_audio(clip):
    info = io.probe(clip)
    assert (info.width, info.height, info.frames) == (96, 64, 12)
    assert info.rate == 25 and not info.variable_rate and info.audio == "aac"


def test_probe_refuses_what_is_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all\n" * 50)
    with pytest.raises(AtelierError, match="not a video FFmpeg can read"):
        io.probe(bad)
    with pytest.raises(AtelierError, match="does not exist"):
        io.probe(tmp_path / "missing.mp4")


def test_probe_refuses_a_file_without_a_video_stream(tmp_path):
    import av

    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w", format="ipod") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "stereo"
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 48000, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(AtelierError, match="no video stream"):
        io.probe(path)


def test_true_flow_of_the_synthetic_clip_is_what_dis_finds(clip_frames):
    frames, flows, masks = clip_frames
    est = Flow("dis")(gray(frames[5]), gray(frames[4]))
    err = np.linalg.norm(est - flows[4], axis=-1)
    inner = masks[4].astype(bool)
    inner[:8], inner[-8:], inner[:, :8], inner[:, -8:] = False, False, False, False
    assert np.median(err[inner]) < 0.5
    # warping the previous frame along the true flow reproduces the current one (up to the sensor noise)
    warped = warp(frames[4].astype(np.float32), flows[4])
    assert np.abs(warped - frames[5])[inner].mean() < 6


def test_consistency_marks_pixels_that_enter_from_outside():
    h, w = 40, 60
    shift = np.zeros((h, w, 2), np.float32)
    shift[..., 0] = 5.0                 # a pans right: b(p + 5) = a(p)
    mask = consistent(shift, -shift)
    assert mask[:, : w - 6].mean() == 1.0 and mask[:, w - 5:].sum() == 0
    bad = consistent(shift, shift)      # forward and backward disagree everywhere
    assert bad.sum() == 0
    # ... unless the two frames look the same there (a flat sky): then any flow warps them alike
    flat = np.full((h, w), 90, np.uint8)
    changed = flat.copy()
    changed[:, 20:30] = 200                # except a band that differs
    mask = consistent(shift, shift, changed, flat)
    assert mask[:, : w - 6].sum() > 0 and mask[5:-5, 24:26].sum() == 0 and mask[5:-5, 40:50].min() == 1
    assert mask[:, w - 5:].sum() == 0     # still nothing from outside the frame


def test_warping_error_is_zero_for_a_sequence_that_follows_the_flow(clip_frames):
    _, flows, masks = clip_frames
    prev = np.random.default_rng(0).random((64, 96, 3)).astype(np.float32)
    cur = warp(prev, flows[0])
    assert warping_error(cur, prev, flows[0], masks[0]) < 1e-10
    assert warping_error(np.clip(cur + 0.1, 0, 1), prev, flows[0], masks[0]) > 0.01


def test_flow_blend_cuts_flicker_below_frame_by_frame_and_the_moving_average(clip_frames):
    """Flicker: every 'stylised' frame is the photo plus fresh noise. Ours must beat both baselines on the
    warping error measured with the true flow."""
    frames, flows, masks = clip_frames
    rng = np.random.default_rng(1)
    stylised = [np.clip(f / 255 + rng.normal(0, 0.08, f.shape), 0, 1).astype(np.float32) for f in frames]
    errors = {}
    for temporal, s in [("none", 0.0), ("average", 0.8), ("flow", 0.8)]:
        st = make_stabilizer(temporal, s)
        outs = [st(f, x) / 255 for f, x in zip(frames, stylised)]
        errors[temporal] = np.mean([warping_error(outs[t], outs[t - 1], flows[t - 1], masks[t - 1])
                                    for t in range(1, len(outs))])
    assert errors["flow"] < 0.5 * errors["average"] < 0.5 * errors["none"]


def test_flow_blend_starts_afresh_at_a_scene_cut():
    st = make_stabilizer("flow", 0.9)
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))  # two unrelated textures
    first = np.zeros((64, 96, 3), np.float32)
    st(a, first)
    second = np.ones((64, 96, 3), np.float32)
    out = st(b, second) / 255  # an unrelated frame: nothing is trusted, the new picture is taken as it is
    assert np.allclose(out, second) and st.trusted[-1] < 0.2


def test_stylize_video_keeps_size_rate_frames_and_audio(tmp_path, clip):
    out = tmp_path / "out.mp4"
    rec = stylize_video(clip, out, ["starry-night"], "paintings", size=64, chunk_frames=5)
    info, frames = _decode(out)
    assert (info.width, info.height, info.frames, info.rate) == (96, 64, 12, 25)
    assert info.audio == "aac" and rec["audio"] == "copied (aac)"
    assert rec["frames"] == 12 and rec["chunks"] == 3 and rec["working_size"] == [64, 42]
    assert not (tmp_path / "out.mp4.parts").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    # painted, not copied: the output differs clearly from the input
    _, src = _decode(clip)
    assert np.abs(frames[6].astype(float) - src[6]).mean() > 10


def test_webm_output_reencodes_audio_its_container_cannot_take(tmp_path, clip):
    rec = stylize_video(clip, tmp_path / "out.webm", ["udnie"], "paintings", size=48, temporal="none")
    assert rec["audio"] == "re-encoded aac as libopus" and io.probe(tmp_path / "out.webm").audio == "opus"


def test_variable_frame_rate_is_kept_in_mp4_and_refused_for_avi(tmp_path, clip_frames, capsys):
    pts = [0, 1, 2, 4, 5, 8, 9, 10, 13, 14, 15, 16]  # in 1/25 s: frames held for 1, 2 and 3 ticks
    vfr = write_video(tmp_path / "vfr.mp4", clip_frames[0], 25, pts=pts, time_base=Fraction(1, 25))
    assert io.probe(vfr).variable_rate
    out = tmp_path / "out.mp4"
    stylize_video(vfr, out, ["udnie"], "paintings", size=48, temporal="none")
    info = io.probe(out)
    assert info.variable_rate and info.frames == 12
    assert abs(info.max_interval - 3 / 25) < 1e-3 and abs(info.min_interval - 1 / 25) < 1e-3
    assert main(["video", str(vfr), "-o", str(tmp_path / "out.avi"), "-m", "paintings", "-s", "udnie"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "variable frame rate" in err[0] and ".avi keeps one fixed rate" in err[0]
    assert not (tmp_path / "out.avi").exists() and not (tmp_path / "out.avi.parts").exists()


def test_output_format_errors_are_one_line(tmp_path, clip, capsys, monkeypatch):
    assert main(["video", str(clip), "-o", str(tmp_path / "out.xyz"), "-m", "paintings", "-s", "udnie"]) == 2
    assert "atelier writes video as" in capsys.readouterr().err
    monkeypatch.setattr(io, "encoder_available", lambda name: False)
    assert main(["video", str(clip), "-o", str(tmp_path / "out.webm"), "-m", "paintings", "-s", "udnie"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has none of its encoders" in err[0]


def test_cli_refuses_bad_inputs_in_one_line(tmp_path, clip, capsys):
    notvideo = tmp_path / "x.mp4"
    notvideo.write_bytes(b"\x00" * 4000)
    cases = [
        ([str(notvideo), "-o", str(tmp_path / "o.mp4"), "-m", "paintings", "-s", "udnie"], "not a video"),
        ([str(clip), "-o", str(tmp_path / "o.mp4"), "-m", "lite", "-s", "udnie"], "video takes one-pass methods"),
        ([str(clip), "-o", str(tmp_path / "o.mp4"), "-m", "paintings", "-s", "nope"], "nope"),
        ([str(clip), "-o", str(clip), "-m", "paintings", "-s", "udnie"], "is the input video"),
    ]
    for argv, what in cases:
        assert main(["video", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0], err
    assert not (tmp_path / "o.mp4").exists()


def test_json_record_on_stdout(tmp_path, clip, capsys):
    out = tmp_path / "o.mkv"
    assert main(["video", str(clip), "-o", str(out), "-m", "paintings", "-s", "udnie", "--size", "48",
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["output"] == str(out) and rec["frames"] == 12 and rec["temporal"] == "flow"
    assert rec["stability"] == 0.8 and rec["encoder"] == "libx264" and rec["audio"] == "copied (aac)"


def _kill_at_frame(monkeypatch, n: int, exc: BaseException):
    calls = {"n": 0}
    real = io.ChunkWriter.write

    def write(self, pts, rgb):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(self, pts, rgb)

    monkeypatch.setattr(io.ChunkWriter, "write", write)


def test_resume_after_a_kill_keeps_finished_chunks_and_matches_an_unbroken_run(tmp_path, clip, monkeypatch):
    whole = tmp_path / "whole.mkv"
    stylize_video(clip, whole, ["starry-night"], "paintings", size=64, chunk_frames=4, keep_parts=True)
    out = tmp_path / "out.mkv"
    with monkeypatch.context() as m:
        _kill_at_frame(m, 10, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            stylize_video(clip, out, ["starry-night"], "paintings", size=64, chunk_frames=4, keep_parts=True)
    parts = tmp_path / "out.mkv.parts"
    assert not out.exists()
    assert sorted(p.name for p in parts.glob("chunk-*.mkv")) == ["chunk-000000.mkv", "chunk-000001.mkv"]
    assert not list(parts.glob("*.tmp"))
    rec = stylize_video(clip, out, ["starry-night"], "paintings", size=64, chunk_frames=4, keep_parts=True)
    assert rec["resumed_chunks"] == 2 and rec["painted"] == 4
    # The stabiliser was restored exactly (from the last lossless frame), so the painted frames are the unbroken
    # run's, bit for bit. (The final H.264 encodes are not compared bit for bit: x264's threads need not repeat.)
    for k in range(3):
        a = [f for _, f in io.read_chunk(tmp_path / f"whole.mkv.parts/chunk-{k:06d}.mkv")]
        b = [f for _, f in io.read_chunk(parts / f"chunk-{k:06d}.mkv")]
        assert len(a) == len(b) == 4 and all(np.array_equal(x, y) for x, y in zip(a, b))
    _, frames = _decode(out)
    assert len(frames) == 12


def test_another_jobs_parts_are_not_mixed_in(tmp_path, clip, monkeypatch, capsys):
    out = tmp_path / "out.mp4"
    with monkeypatch.context() as m:
        _kill_at_frame(m, 6, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            stylize_video(clip, out, ["udnie"], "paintings", size=48, chunk_frames=4)
    assert main(["video", str(clip), "-o", str(out), "-m", "paintings", "-s", "the-scream", "--size", "48",
                 "--chunk-frames", "4"]) == 2
    assert "holds the chunks of another job" in capsys.readouterr().err
    assert (tmp_path / "out.mp4.parts" / "chunk-000000.mkv").exists()


def test_disk_full_while_painting_is_one_line_and_keeps_chunks(tmp_path, clip, monkeypatch, capsys):
    _kill_at_frame(monkeypatch, 7, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "out.mp4"
    assert main(["video", str(clip), "-o", str(out), "-m", "paintings", "-s", "udnie", "--size", "48",
                 "--chunk-frames", "3", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk filled up" in err[0]
    assert not out.exists() and len(list((tmp_path / "out.mp4.parts").glob("chunk-*.mkv"))) == 2
    assert not list((tmp_path / "out.mp4.parts").glob("*.tmp"))


def test_disk_full_while_encoding_leaves_no_output_and_keeps_chunks(tmp_path, clip, monkeypatch, capsys):
    real = io.read_chunk
    count = {"n": 0}

    def full(path):
        for item in real(path):
            count["n"] += 1
            if count["n"] == 5:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield item

    monkeypatch.setattr(io, "read_chunk", full)
    out = tmp_path / "out.mp4"
    assert main(["video", str(clip), "-o", str(out), "-m", "paintings", "-s", "udnie", "--size", "48", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk filled up" in err[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4")]
    assert (tmp_path / "out.mp4.parts" / "chunk-000000.mkv").exists()
    monkeypatch.setattr(io, "read_chunk", real)
    rec = stylize_video(clip, out, ["udnie"], "paintings", size=48)
    assert rec["painted"] == 0 and rec["resumed_chunks"] == 1 and out.exists()


def test_example_clip_is_a_video_with_known_size(tmp_path, capsys):
    pytest.importorskip("skimage")
    out = tmp_path / "clip.mkv"
    assert main(["example-clip", str(out), "--frames", "6"]) == 0
    info = io.probe(out)
    assert (info.width, info.height, info.frames, info.rate) == (640, 360, 6, 25)
    assert main(["example-clip", str(tmp_path / "clip.xyz")]) == 2
