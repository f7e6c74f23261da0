"""int8 quantisation of an fp32 ONNX model with onnxruntime: dynamic (weights only; activations quantized on the fly
from their range, every conv a ConvInteger) or static (QDQ: weights and activations, the activation ranges
calibrated by min/max on photographs)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import AtelierError
from ..images import load_image
from ..runtime import COND_NAME, INPUT_NAME, STRENGTH_NAME
from .common import quiet

# A calibration image, or (image, the other inputs it is fed with: a conditional student's cond and strength).
CalibrationItem = Union[Path, tuple[Path, dict[str, np.ndarray]]]


def calibration_reader(files: Sequence[CalibrationItem], size: int) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over image files, loaded one at a time at long side ``size``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._files = iter(files)

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            item = next(self._files, None)
            if item is None:
                return None
            path, feeds = item if isinstance(item, tuple) else (item, {})
            return {INPUT_NAME: load_image(path, size=size).numpy(), **feeds}

    return Reader()


def calibration_items(files: list[Path], conditions: Sequence[tuple[np.ndarray, float]]) -> list[CalibrationItem]:
    """The calibration images of a conditional student, each fed with the next of ``conditions`` (cond [1, n],
    strength) in turn, so the activation ranges cover its styles; ``files`` as they are when there are none."""
    if not conditions:
        return list(files)
    return [(f, {COND_NAME: conditions[i % len(conditions)][0].astype(np.float32),
                 STRENGTH_NAME: np.array([conditions[i % len(conditions)][1]], dtype=np.float32)})
            for i, f in enumerate(files)]


def spread(files: list[Path], count: int) -> list[Path]:
    """At most ``count`` files spread evenly over the sorted list (a folder of similar names stays varied)."""
    if len(files) <= count:
        return files
    return [files[round(i * (len(files) - 1) / (count - 1))] for i in range(count)] if count > 1 else files[:1]


def _quantize(fp32: bytes, quantize: str, files: list[CalibrationItem], size: int, tmp: Path) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    src.write_bytes(fp32)
    with quiet():
        if quantize == "int8-dynamic":
            # Weights quantized once; activations per call from their observed range (ConvInteger). uint8 weights:
            # with int8 ones onnxruntime 1.32's ConvInteger took 351 ms against 55 ms for uint8 (starry-tiny,
            # 512x512, one thread), at the same PSNR.
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        else:
            reader = calibration_reader(files, size)
            # QDQ, uint8 activations with int8 weights (onnxruntime's recommended CPU pairing), min/max ranges:
            # the histogram calibrators stack every image's activations and so need equal image sizes.
            quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=False, calibrate_method=CalibrationMethod.MinMax)
    return dst.read_bytes()


def quantize_model(fp32: bytes, quantize: str, files: list[CalibrationItem], size: int) -> bytes:
    """The ``quantize`` ("int8-dynamic" or "int8-static") model of ``fp32`` (``files``: the calibration items);
    onnxruntime's failures in one line."""
    with tempfile.TemporaryDirectory(prefix="atelier-export-") as tmp:
        try:
            return _quantize(fp32, quantize, files, size, Path(tmp))
        except AtelierError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AtelierError(f"onnxruntime could not quantize the model ({type(e).__name__}: {first[:200]}); "
                               "export without --quantize") from None
