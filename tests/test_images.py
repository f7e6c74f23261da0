"""Tests for atelier.images: reading every format, conversions, resizing, atomic saving and metadata."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from atelier import images
from atelier.errors import AtelierError
from atelier.files import atomic_path, atomic_write_bytes, atomic_write_text
from atelier.images import (
    check_output_path,
    list_images,
    load_image,
    open_image,
    pil_to_tensor,
    read_metadata,
    resize_long_side,
    resize_to,
    save_image,
    tensor_to_pil,
)


def _rgb_array(h: int = 12, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16(arr: np.ndarray) -> bytes:
    """A hand-made 16-bit PNG (Pillow cannot write 16-bit RGB): arr is HxW or HxWx3 uint16."""
    h, w = arr.shape[:2]
    colour_type = 0 if arr.ndim == 2 else 2
    rows = arr.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b""))


def _error(func, *args, **kwargs) -> str:
    with pytest.raises(AtelierError) as info:
        func(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# ------------------------------------------------------------------------------------------- conversion


def test_round_trip_is_exact_for_8bit_values():
    arr = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    img = Image.fromarray(arr.astype(np.uint8))
    t = pil_to_tensor(img)
    assert t.shape == (1, 3, 16, 16) and t.dtype == torch.float32
    assert float(t.min()) == 0.0 and float(t.max()) == 1.0
    assert np.array_equal(np.asarray(tensor_to_pil(t)), np.asarray(img))
    assert np.array_equal(np.asarray(tensor_to_pil(t[0])), np.asarray(img))  # [3,H,W] accepted


def test_tensor_to_pil_clamps_and_rounds_to_nearest():
    t = torch.tensor([-0.5, 1.4 / 255, 1.6 / 255, 2.0, float("nan"), 0.5]).reshape(1, 3, 1, 2)
    out = np.asarray(tensor_to_pil(t))
    assert out.tolist() == [[[0, 2, 0], [1, 255, 128]]]  # NaN -> 0; 127.5 -> 128
    g = torch.ones(1, 3, 2, 2, requires_grad=True)
    assert tensor_to_pil(g * 0.5).mode == "RGB"  # tensors needing grad are fine
    with pytest.raises(ValueError):
        tensor_to_pil(torch.zeros(2, 3, 4, 4))


# ---------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("ext,fmt,lossless", [
    (".png", "PNG", True), (".jpg", "JPEG", False), (".webp", "WEBP", False), (".tif", "TIFF", True),
    (".bmp", "BMP", True), (".gif", "GIF", False),
])
def test_reads_every_format(tmp_path, ext, fmt, lossless):
    arr = np.zeros((12, 20, 3), dtype=np.uint8)
    arr[:, :10] = (200, 40, 30)
    arr[:, 10:] = (20, 60, 220)
    path = tmp_path / f"img{ext}"
    Image.fromarray(arr).save(path, fmt)
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (20, 12)
    diff = np.abs(np.asarray(img).astype(int) - arr.astype(int))
    assert diff.max() == 0 if lossless else diff.mean() < 6
    t = load_image(path)
    assert t.shape == (1, 3, 12, 20) and t.dtype == torch.float32


def test_reads_16bit_grayscale_png_scaled(tmp_path):
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)  # Pillow writes I;16 as a 16-bit grayscale PNG
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(open_image(path))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]  # scaled, not clipped at 255
    path2 = tmp_path / "g16b.png"
    path2.write_bytes(_png16(arr))
    assert np.asarray(open_image(path2))[0, :, 1].tolist() == [0, 1, 128, 255]


def test_reads_16bit_rgb_png(tmp_path):
    arr = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1000).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png16(arr))
    out = np.asarray(open_image(path)).astype(int)
    assert out.shape == (4, 5, 3)
    assert np.abs(out - arr / 257.0).max() <= 1.0


def test_gif_returns_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 6), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    assert np.asarray(open_image(path))[0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
    img = open_image(path)
    assert img.size == (20, 40)  # width and height swapped
    out = np.asarray(img).astype(int)
    assert out[2, 10, 0] > 200 and out[-3, 10, 2] > 200  # the left half is now on top


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr", "I", "F", "F255"])
def test_other_modes_become_rgb(tmp_path, mode):
    src = Image.fromarray(_rgb_array())
    gray = np.asarray(src.convert("L"))
    if mode == "I":
        img = Image.fromarray(gray.astype(np.int32) * 257)  # 16-bit data in a 32-bit integer image
    elif mode == "F":
        img = Image.fromarray(gray.astype(np.float32) / 255)
    elif mode == "F255":
        img = Image.fromarray(gray.astype(np.float32))
    else:
        img = src.convert(mode)
    t = pil_to_tensor(img)
    assert t.shape == (1, 3, 12, 20) and t.dtype == torch.float32
    if mode in ("L", "I", "F", "F255"):
        expected = torch.from_numpy(gray / 255.0).float().expand(3, -1, -1)
        assert torch.allclose(t[0], expected, atol=1e-6)
    else:
        path = _save(img, tmp_path / "x.tif")
        assert torch.equal(load_image(path), t)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :3, 3] = 0      # transparent -> white
    rgba[:, 3:, 3] = 255    # opaque -> colour kept
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    out = np.asarray(open_image(path))
    assert out[:, :3].reshape(-1, 3).tolist() == [[255, 255, 255]] * 12
    assert out[:, 3:].reshape(-1, 3).tolist() == [[10, 20, 30]] * 12
    half = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    assert abs(int(np.asarray(pil_to_tensor(half) * 255)[0, 0, 0, 0]) - 127) <= 1
    la = Image.new("LA", (2, 2), (0, 0))
    assert np.asarray(open_image(_save(la, tmp_path / "la.png"))).min() == 255


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_palette_with_transparency_becomes_white(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((0, 0), 1)
    path = _save(pal, tmp_path / "p.png", transparency=0)
    out = np.asarray(open_image(path))
    assert out[0, 0].tolist() == [200, 10, 10] and out[1, 1].tolist() == [255, 255, 255]
    gif = _save(pal, tmp_path / "p.gif", transparency=0)
    assert np.asarray(open_image(gif))[2, 2].tolist() == [255, 255, 255]
    pa = Image.new("PA", (2, 2))
    pa.putpalette([9, 9, 9] * 256)
    assert np.asarray(pil_to_tensor(pa)).min() == 1.0  # alpha 0 everywhere -> white


# ------------------------------------------------------------------------------------------ read errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    assert str(path) in _error(open_image, path)


def test_directory_instead_of_file(tmp_path):
    assert "directory" in _error(open_image, tmp_path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello, I am not a picture\n")
    msg = _error(open_image, path)
    assert str(path) in msg and "not an image" in msg


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    assert "empty" in _error(open_image, path)


@pytest.mark.parametrize("fmt,ext", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_image_fails(tmp_path, fmt, ext):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    buf = io.BytesIO()
    Image.fromarray(_rgb_array(64, 64)).save(buf, fmt)
    path = tmp_path / f"cut{ext}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    msg = _error(open_image, path)
    assert str(path) in msg and "corrupt" in msg


def test_zero_width_image(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (3, 3)), tmp_path / "z.png")
    # Pillow itself refuses to identify zero-sized files, so simulate a plugin that reports one.
    monkeypatch.setattr(images.Image, "open", lambda fp: Image.new("RGB", (0, 3)))
    assert "zero width or height" in _error(open_image, path)


def test_permission_denied(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (3, 3)), tmp_path / "locked.png")
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root ignores file modes: simulate the OS refusing
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(images, "open", refuse, raising=False)
    try:
        msg = _error(open_image, path)
    finally:
        path.chmod(0o644)
    assert "permission denied" in msg and str(path) in msg


def test_too_many_pixels_refused_before_decoding(tmp_path, monkeypatch):
    path = _save(Image.fromarray(_rgb_array(100, 100)), tmp_path / "big.png")

    def never(self):
        raise AssertionError("pixel data was decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    monkeypatch.setattr(Image.Image, "load", never)
    msg = _error(open_image, path, max_pixels=5000)
    assert "max_pixels" in msg and "5,000" in msg and str(path) in msg
    with pytest.raises(AtelierError):
        load_image(path, max_pixels=9999)


def test_max_pixels_exactly_at_limit_is_fine(tmp_path):
    path = _save(Image.fromarray(_rgb_array(100, 100)), tmp_path / "ok.png")
    assert open_image(path, max_pixels=10_000).size == (100, 100)
    for bad in (0, -5, 1.5, True):
        _error(open_image, path, max_pixels=bad)


@pytest.mark.parametrize("kind", ["error", "warning"])
def test_pillow_bomb_check_becomes_atelier_error(tmp_path, monkeypatch, kind):
    path = _save(Image.new("RGB", (10, 10)), tmp_path / "bomb.png")

    def bomb(size, *, error_only=False):
        if kind == "error":
            raise Image.DecompressionBombError("too big")
        warnings.warn("too big", Image.DecompressionBombWarning)
    monkeypatch.setattr(Image, "_decompression_bomb_check", bomb)
    assert "max_pixels" in _error(open_image, path)


def test_max_pixels_above_pillow_limit_works_and_limit_is_never_lowered(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "wide.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 10,000 pixels
    assert open_image(path, max_pixels=20_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS >= 20_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10**9)
    open_image(path, max_pixels=20_000)
    assert Image.MAX_IMAGE_PIXELS == 10**9


# --------------------------------------------------------------------------------------------- resizing


def test_load_image_size_sets_long_side(tmp_path):
    path = _save(Image.fromarray(_rgb_array(20, 40)), tmp_path / "wide.png")
    assert load_image(path, size=10).shape == (1, 3, 5, 10)
    assert load_image(path, size=80, device="cpu").shape == (1, 3, 40, 80)  # upscales too
    for bad in (0, -1, 2.5):
        _error(load_image, path, size=bad)


def test_resize_long_side_non_square():
    tall = torch.rand(1, 3, 30, 17)
    assert resize_long_side(tall, 10).shape == (1, 3, 10, 6)  # 17/3 = 5.67 -> 6
    wide = torch.rand(2, 3, 17, 30)
    assert resize_long_side(wide, 10).shape == (2, 3, 6, 10)
    assert resize_long_side(torch.rand(1, 3, 1, 100), 10).shape == (1, 3, 1, 10)  # at least 1 px
    assert resize_long_side(torch.rand(3, 8, 4), 16).shape == (3, 16, 8)
    assert resize_long_side(tall, 30) is tall
    assert images.long_side_hw(3, 5, 4) == (2, 4)  # 2.4 -> 2
    assert images.long_side_hw(5, 3, 8) == (8, 5)  # 4.8 -> 5
    with pytest.raises(ValueError):
        resize_long_side(tall, 0)


def test_resize_to_keeps_range_and_identity():
    x = torch.zeros(1, 3, 16, 16)
    x[..., ::2, :] = 1.0
    y = resize_to(x, (40, 24))
    assert y.shape == (1, 3, 40, 24) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # bicubic overshoot clamped
    assert resize_to(x, (16, 16)) is x


def test_downscaling_is_antialiased():
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    board = ((yy + xx) % 2).float().expand(1, 3, 64, 64)
    small = resize_to(board, (8, 8))
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.02)


def test_resize_keeps_autograd():
    x = torch.rand(1, 3, 32, 24, requires_grad=True)
    y = resize_long_side(x, 16)
    (y * torch.rand_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("ext", [".png", ".jpg", ".jpeg", ".webp"])
def test_save_image_with_metadata(tmp_path, ext):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 12), torch.linspace(0, 1, 20), indexing="ij")
    t = torch.stack([yy, xx, (yy + xx) / 2]).unsqueeze(0)
    t = pil_to_tensor(tensor_to_pil(t))  # 8-bit values, so the PNG round trip must be exact
    meta = {"method": "lite", "steps": 3, "loss": 1.25, "names": ["a", "é"]}
    out = save_image(t, tmp_path / f"out{ext}", meta)
    assert out == tmp_path / f"out{ext}" and out.is_file()
    back = load_image(out)
    assert back.shape == t.shape
    if ext == ".png":
        assert torch.equal(back, t)
        assert not (tmp_path / "out.png.json").exists()
    else:
        assert (back - t).abs().mean() < 0.03
        assert json.loads((tmp_path / f"out{ext}.json").read_text()) == meta
    assert read_metadata(out) == meta
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({f"out{ext}", f"out{ext}.json"} - (
        {"out.png.json"} if ext == ".png" else set()))


def test_save_without_metadata_and_stale_sidecar(tmp_path):
    img = Image.new("RGB", (5, 4), (1, 2, 3))
    save_image(img, tmp_path / "a.jpg", {"run": 1})
    assert read_metadata(tmp_path / "a.jpg") == {"run": 1}
    save_image(img, tmp_path / "a.jpg")  # a new image under the same name must not inherit old metadata
    assert read_metadata(tmp_path / "a.jpg") is None
    assert not (tmp_path / "a.jpg.json").exists()
    save_image(img, tmp_path / "b.png")
    assert read_metadata(tmp_path / "b.png") is None
    save_image(Image.new("RGBA", (2, 2), (0, 0, 0, 0)), tmp_path / "c.png")
    assert np.asarray(Image.open(tmp_path / "c.png")).tolist() == [[[255] * 3] * 2] * 2


def test_read_metadata_errors(tmp_path):
    _error(read_metadata, tmp_path / "missing.png")
    img = Image.new("RGB", (2, 2))
    save_image(img, tmp_path / "x.webp")
    (tmp_path / "x.webp.json").write_text("{not json")
    assert "JSON" in _error(read_metadata, tmp_path / "x.webp")
    (tmp_path / "fake.png").write_text("no")
    _error(read_metadata, tmp_path / "fake.png")


@pytest.mark.parametrize("name", ["out.gif", "out.bmp", "out", "out.tiff", "out.png.txt"])
def test_unsupported_extension_refused(tmp_path, name):
    msg = _error(save_image, Image.new("RGB", (2, 2)), tmp_path / name)
    assert ".png" in msg and ".webp" in msg
    assert list(tmp_path.iterdir()) == []


def test_check_output_path_cases(tmp_path, monkeypatch):
    assert check_output_path(tmp_path / "ok.PNG") == tmp_path / "ok.PNG"  # case-insensitive extension
    assert check_output_path(str(tmp_path / "ok.jpeg")) == tmp_path / "ok.jpeg"
    monkeypatch.chdir(tmp_path)
    assert check_output_path("relative.webp") == Path("relative.webp")
    missing = tmp_path / "no" / "such" / "out.png"
    msg = _error(check_output_path, missing)
    assert "does not exist" in msg and str(missing.parent) in msg
    assert not (tmp_path / "no").exists()  # nothing created
    (tmp_path / "dir.png").mkdir()
    assert "directory" in _error(check_output_path, tmp_path / "dir.png")
    (tmp_path / "file").write_text("x")
    _error(check_output_path, tmp_path / "file" / "out.png")


def test_unwritable_directory_refused(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(images.os, "access",
                        lambda p, m, **kw: False if Path(p) == locked else real_access(p, m, **kw))
    msg = _error(save_image, Image.new("RGB", (2, 2)), locked / "out.png")
    assert "not writable" in msg
    assert list(locked.iterdir()) == []
    _error(save_image, Image.new("RGB", (2, 2)), tmp_path / "missing" / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked"]


def test_failure_during_save_leaves_nothing(tmp_path, monkeypatch):
    real_save = Image.Image.save

    def half_then_crash(self, fp, format=None, **params):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG partial")
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(Image.Image, "save", half_then_crash)
    msg = _error(save_image, Image.new("RGB", (4, 4)), tmp_path / "out.png", {"a": 1})
    assert "disk on fire" in msg and str(tmp_path / "out.png") in msg
    assert list(tmp_path.iterdir()) == []
    # An existing output is left untouched by a failed overwrite.
    monkeypatch.setattr(Image.Image, "save", real_save)
    save_image(Image.new("RGB", (4, 4), (9, 9, 9)), tmp_path / "keep.jpg", {"v": 1})
    before = (tmp_path / "keep.jpg").read_bytes()
    monkeypatch.setattr(Image.Image, "save", half_then_crash)
    _error(save_image, Image.new("RGB", (4, 4)), tmp_path / "keep.jpg", {"v": 2})
    assert (tmp_path / "keep.jpg").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jpg", "keep.jpg.json"]
    assert read_metadata(tmp_path / "keep.jpg") == {"v": 1}


def test_bad_quality_and_non_serialisable_metadata_write_nothing(tmp_path):
    img = Image.new("RGB", (2, 2))
    _error(save_image, img, tmp_path / "q.jpg", quality=0)
    with pytest.raises(TypeError):
        save_image(img, tmp_path / "m.png", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_cleans_up_and_propagates(tmp_path):
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".state.bin.") and tmp.suffix == ".tmp"
            tmp.write_bytes(b"new, partial")
            raise KeyError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    _error(atomic_write_bytes, tmp_path / "missing" / "x.bin", b"data")


def test_atomic_write_helpers_and_file_mode(tmp_path):
    p = atomic_write_text(tmp_path / "notes.json", '{"é": 1}\n')
    assert p.read_text(encoding="utf-8") == '{"é": 1}\n'
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    p.chmod(0o640)
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and stat.S_IMODE(p.stat().st_mode) == 0o640
    assert [x.name for x in tmp_path.iterdir()] == ["notes.json"]


# -------------------------------------------------------------------------------------------- listing


def test_list_images(tmp_path):
    for name in ["b.JPG", "a.png", "c.tiff", "d.webp", "e.Gif", "f.bmp", "g.jpeg", "h.tif",
                 "notes.txt", ".hidden.png", "._a.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == sorted(["a.png", "b.JPG", "c.tiff", "d.webp", "e.Gif", "f.bmp", "g.jpeg", "h.tif"])
    assert all(isinstance(p, Path) and p.parent == tmp_path for p in list_images(str(tmp_path)))
    assert str(tmp_path / "nope") in _error(list_images, tmp_path / "nope")
    _error(list_images, tmp_path / "a.png")


# ---- the one input gate (issue 12, defects 5-7): every kind of input gives the pixels of the same file read by path


def _gate_and_file(img, tmp_path, name="x.png"):
    from atelier.images import load_image, to_image_tensor

    path = tmp_path / name
    img.save(path)
    return to_image_tensor(img), load_image(path)


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "LA", "P", "L"])
def test_pil_images_of_every_mode_match_the_same_file_read_by_path(mode, tmp_path):
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(g.integers(0, 65535, (12, 16), dtype=np.uint16))
    elif mode == "F":
        img = Image.fromarray(g.random((12, 16), dtype=np.float32))
    else:
        img = Image.fromarray(g.integers(0, 255, (12, 16, 4), dtype=np.uint8), "RGBA").convert(mode)
    if mode == "F":  # Pillow cannot write F to PNG: compare with its 8-bit rendering, as _to_rgb scales it
        from atelier.images import to_image_tensor

        t = to_image_tensor(img)
        want = torch.from_numpy(np.rint(np.asarray(img) * 255) / 255).float()
        assert torch.allclose(t[0, 0], want, atol=1 / 255 + 1e-6) and 0.2 < float(t.mean()) < 0.8
        return
    got, want = _gate_and_file(img, tmp_path)
    assert torch.equal(got, want)
    if mode == "I;16":
        assert 0.3 < float(got.mean()) < 0.7  # scaled from 16 bits, not clipped to white


def test_alpha_goes_over_white_for_images_and_arrays():
    import numpy as np
    from PIL import Image

    from atelier.images import to_image_tensor

    transparent = np.zeros((4, 4, 4), dtype=np.uint8)
    assert torch.equal(to_image_tensor(Image.fromarray(transparent, "RGBA")), torch.ones(1, 3, 4, 4))
    assert torch.equal(to_image_tensor(transparent), torch.ones(1, 3, 4, 4))


def test_arrays_and_tensors_of_common_dtypes_give_the_same_pixels():
    import numpy as np

    from atelier.images import to_image_tensor

    u8 = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    want = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(to_image_tensor(u8), want)                                     # numpy HxWx3 uint8
    assert torch.equal(to_image_tensor(torch.from_numpy(u8).permute(2, 0, 1)), want)  # uint8 tensor, not white
    assert torch.equal(to_image_tensor(want[0]), want)                                # float [3,H,W]
    assert torch.allclose(to_image_tensor((u8.astype(np.uint16) * 257)), want)        # 16-bit
    grey = to_image_tensor(u8[..., 0])
    assert grey.shape == (1, 3, 6, 8) and torch.equal(grey[:, 0], grey[:, 2])


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
    (torch.rand(1, 3, 4, 4) * 255, "divide by 255"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.complex64), "dtype complex64"),
    (torch.zeros(1, 3, 0, 4), "empty"),
    (torch.zeros(2, 3, 4, 4), "shape"),
    (None, "got NoneType"),
    (7, "got int"),
    (b"\x89PNG", "image \\(bytes\\) is not an image"),  # bytes are decoded as a file's (issue 15): these are not one
    (b"", "image \\(bytes\\) is empty"),
    (io.StringIO("not bytes"), "gave text, not bytes"),
])
def test_bad_inputs_raise_one_line_atelier_errors(bad, message):
    from atelier.images import to_image_tensor

    with pytest.raises(AtelierError, match=message) as e:
        to_image_tensor(bad)
    assert "\n" not in str(e.value)


def test_stylize_takes_numpy_and_refuses_empty_pil_images():
    import numpy as np
    from PIL import Image

    import atelier

    photo = (np.random.default_rng(2).random((20, 28, 3)) * 255).astype(np.uint8)
    r = atelier.stylize(photo, photo, size=24, iterations=1, scales="none")
    assert r.tensor.shape == (1, 3, 17, 24) and r.metadata["content"] == "ndarray"
    with pytest.raises(AtelierError, match="zero width or height"):
        atelier.stylize(Image.new("RGB", (0, 0)), photo, size=24, iterations=1)


def test_a_size_past_the_pixel_limit_is_refused_before_allocating(tmp_path):
    import atelier
    from atelier.cli import main
    from atelier.images import save_image

    tiny = tmp_path / "one.png"
    save_image(torch.ones(1, 3, 1, 1), tiny)
    with pytest.raises(AtelierError, match="more than max_pixels"):
        atelier.stylize(torch.rand(1, 3, 30, 40), torch.rand(1, 3, 8, 8), size=100_000, iterations=1)
    out = tmp_path / "o.png"
    # 7100 x 7100 from a 1x1 photo is 50.4 MP: past the default limit of 50 MP.
    assert main(["stylize", str(tiny), "--style", str(tiny), "-o", str(out), "--size", "7100", "-q"]) == 2
    assert not out.exists()
