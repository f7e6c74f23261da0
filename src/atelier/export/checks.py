"""The checks an export must pass before anything is written: onnx's checker, parity of the fp32 ONNX model with
torch (max abs difference), and the PSNR of an int8 model against the fp32 one, on a set of check images whose sizes
differ from the trace size (odd ones and one below the graph's minimum included). A conditional student is checked
on every image under two of its conditions (``with_conditions``), with several strengths."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import AtelierError
from ..images import load_image, resize_long_side
from ..methods.feedforward import StudentModel
from ..runtime import OnnxStylizer, resize_array
from .common import PathLike

CHECK_SIDE = 512  # check images given by path are shrunk to this long side (only shrunk) to keep the check quick

CheckImage = tuple[str, np.ndarray, bool]  # (label, [1,3,H,W] float32, photo_like)
# (label, [1,3,H,W] float32, photo_like, condition [1, cond_dim] or None, strength or None)
CheckCase = tuple[str, np.ndarray, bool, Optional[np.ndarray], Optional[float]]
Condition = tuple[str, np.ndarray, float]  # (label, condition [1, cond_dim], strength)


def smooth(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like random image: low-resolution colour noise upsampled (smooth regions and soft edges)."""
    rng = np.random.default_rng(seed)
    small = rng.random((1, 3, max(2, h // 12), max(2, w // 12)), dtype=np.float32)
    return resize_array(small, (h, w))


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, h, w), dtype=np.float32)


def _sample_photos() -> list[tuple[str, np.ndarray]]:
    """scikit-image's sample photographs (real pictures that ship with a dependency), if it is installed."""
    try:
        from skimage import data
    except ImportError:
        return []
    out = []
    for name in ("chelsea", "coffee"):
        with contextlib.suppress(Exception):  # a broken skimage install costs these images, not the export
            a = np.asarray(getattr(data, name)(), dtype=np.float32)[..., :3].transpose(2, 0, 1)[None] / 255.0
            out.append((f"skimage.{name}", np.ascontiguousarray(a)))
    return out


def check_set(min_input: int, extra: Sequence[Union[PathLike, np.ndarray]]) -> list[CheckImage]:
    """(label, [1,3,H,W] float32, photo_like) images for the checks; sizes chosen to differ from the trace size."""
    m = min_input
    images = [("noise", _noise(97, 131, 1), False), ("smooth", smooth(256, 384, 2), True),
              ("smooth", smooth(131, 97, 3), True), ("noise", _noise(m, m + 3, 4), False),
              ("noise", _noise(3, 5, 5), False)]  # 3x5: below min_input, through the runtime's own padding
    images += [(label, a, True) for label, a in _sample_photos()]
    for i, item in enumerate(extra):
        if isinstance(item, np.ndarray):
            a = item if item.ndim == 4 else item[None]
            images.append((f"check_images[{i}]", np.ascontiguousarray(a[:1], dtype=np.float32), True))
            continue
        t = load_image(item)  # one-line errors for unreadable files
        if max(t.shape[-2:]) > CHECK_SIDE:
            t = resize_long_side(t, CHECK_SIDE)
        images.append((Path(item).name, t.numpy(), True))
    return images


def with_conditions(images: list[CheckImage], conditions: Sequence[Condition]) -> list[CheckCase]:
    """The check cases: each image as it is (no conditions: a student with its style built in), or under two
    consecutive ``conditions`` (so every condition and strength is seen, each on images of several sizes)."""
    if not conditions:
        return [(label, x, photo, None, None) for label, x, photo in images]
    cases = []
    for i, (label, x, photo) in enumerate(images):
        for j in (i, i + 1):
            name, cond, strength = conditions[j % len(conditions)]
            cases.append((f"{label} [{name}, strength {strength:g}]", x, photo, cond, strength))
    return cases


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for [0,1] images; capped at 100 (identical outputs), so reports stay valid JSON (no Infinity)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else min(100.0, 10.0 * math.log10(1.0 / mse))


def checked(onnx: Any, proto: Any) -> None:
    """onnx's own checker (full check: shape inference too); a failure is our bug, said in one line."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError and shape-inference errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AtelierError(f"the exported model fails onnx's checker ({first[:200]}); please report this") from None


def parity(student: StudentModel, fp32: bytes, images: list[CheckCase], tolerance: float,
           path: Path, predictor: Optional[bytes] = None) -> tuple[list[dict], float, list[np.ndarray]]:
    """Run the fp32 ONNX model (through the runtime's own code path) and torch on every check case; refuse when
    they differ by more than ``tolerance``. Returns (rows, worst difference, the ONNX outputs). ``predictor``: an
    arbitrary-style student's style predictor (bytes)."""
    # As many onnxruntime threads as torch uses here, so OMP_NUM_THREADS / torch settings bound both.
    session = OnnxStylizer(fp32, threads=torch.get_num_threads(), predictor=predictor)
    rows, outputs = [], []
    for label, x, _, cond, strength in images:
        with torch.no_grad():
            want = student.run(torch.from_numpy(x), cond=None if cond is None else torch.from_numpy(cond),
                               strength=strength).numpy()
        got = session.run(x, cond=cond, strength=strength)
        outputs.append(got)
        rows.append({"image": label, "hw": list(x.shape[-2:]), "max_abs_diff": float(np.abs(got - want).max())})
    worst = max(r["max_abs_diff"] for r in rows)
    if not worst <= tolerance:  # written so that NaN fails too
        bad = max(rows, key=lambda r: r["max_abs_diff"])
        raise AtelierError(f"refusing to write {path}: the ONNX model differs from torch by {worst:.3g} (limit "
                           f"{tolerance:g}) on {bad['image']} {bad['hw'][0]}x{bad['hw'][1]}; the export is "
                           "broken, please report it")
    return rows, worst, outputs


def psnr_gate(data: bytes, quantize: str, images: list[CheckCase], fp32_outputs: list[np.ndarray],
              min_psnr: float, path: Path, predictor: Optional[bytes] = None) -> tuple[list[dict], Optional[float]]:
    """PSNR of the quantized model against the fp32 one on every check case; refuse when the worst photo-like one
    is below ``min_psnr``. Returns (rows, worst photo-like PSNR)."""
    session = OnnxStylizer(data, threads=torch.get_num_threads(), predictor=predictor)
    rows = [{"image": label, "hw": list(x.shape[-2:]), "photo_like": photo,
             "psnr_db": psnr(session.run(x, cond=cond, strength=strength), ref)}
            for (label, x, photo, cond, strength), ref in zip(images, fp32_outputs)]
    # Photo-like images only: uniform noise drives activations far outside any photo's calibrated range, and the
    # model is for photographs. Noise rows are still reported.
    worst = min(r["psnr_db"] for r in rows if r["photo_like"])
    if not worst >= min_psnr:
        bad = min((r for r in rows if r["photo_like"]), key=lambda r: r["psnr_db"])
        raise AtelierError(f"refusing to write {path}: the {quantize} model's output is {worst:.1f} dB PSNR from "
                           f"the fp32 model's on {bad['image']} (limit {min_psnr:g} dB); export fp32, try the other "
                           "int8 mode, or calibrate on more typical photographs")
    return rows, worst
