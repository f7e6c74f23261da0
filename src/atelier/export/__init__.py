"""Export a student model folder to ONNX, with built-in checks, optionally quantized to int8.

``export_onnx(model, out, opset=18, quantize="none", calibration=None, check=True, *, force=False, ...,
magenta_weights=None) -> ExportReport``

| module | holds |
|---|---|
| ``common.py`` | defaults, ``ExportReport``, the argument and model checks (before any tracing) |
| ``onnx.py`` | ``export_onnx``: the trace, the metadata, the write |
| ``checks.py`` | the check images, parity with torch, the int8 PSNR gate |
| ``quantize.py`` | int8 quantization (dynamic, or static with calibration) |
| ``cond.py`` | conditional students: the ``cond``/``strength`` inputs, metadata, check conditions, style predictor |
| ``magenta.py`` | ``export_magenta``: the magenta method's transformer and style predictor (two files, fp32) |

Contract of what it writes (read by ``atelier.runtime``; the metadata keys are listed there):

- input ``image`` and output ``stylized``: float32 ``[N,3,H,W]`` RGB in [0,1], with symbolic ``batch``, ``height``
  and ``width``. The generator is traced by ``torch.export`` with every one of those dimensions dynamic and
  translated by torch's public ONNX exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript underneath).
  The graph covers ``H, W >= min_input`` (``max(min_size, 2 * pad_multiple)``, see ``atelier.nets``); the runtime
  pads smaller inputs itself, exactly as the generator does, so every size works there.
- the model's config travels in ONNX ``metadata_props`` (``atelier.*``): name, kind, generator, architecture, style,
  pad multiple and minimum sizes, atelier version, the weights' identity, opset, quantization and the measured check.
- checks (``check=True``): ``onnx.checker.check_model`` always; then the ONNX model, run through the runtime's own
  code path, must match torch within ``tolerance`` (max abs difference, default 1e-3) on random and photo-like
  images at several sizes other than the trace size, odd ones included (97x131, 256x384, ...), plus scikit-image's
  sample photographs when it is installed and any ``check_images``. A quantized model must keep a PSNR against the
  fp32 ONNX model of at least ``min_psnr`` dB (default 25) on every photo-like check image. A model that fails is
  refused with a one-line ``AtelierError`` and nothing is written at ``out``.
- ``quantize``: ``"int8-dynamic"`` (8-bit weights, activations quantized on the fly from their range: every conv
  becomes a ConvInteger), ``"int8-static"`` (QDQ: 8-bit weights and activations, activation ranges calibrated by
  min/max on up to ``calibration_count`` images of the folder ``calibration``).
- an existing ``out`` is refused unless ``force`` (the CLI's ``--force``); the write is atomic (temporary name in
  the same folder, then rename).
- conditional students (a style set, an arbitrary-style student; ``nets/cond.py``): two more inputs, ``cond``
  float32 ``[batch, cond_dim]`` and ``strength`` float32 ``[batch]`` (the blend with the photo, in the graph), and
  ``export_format`` 2 with the condition's metadata (``atelier.runtime`` lists it). The parity check runs every check
  image under two of the student's conditions (each style, an equal mix; for an arbitrary student the embeddings of
  the bundled paintings and of synthetic images, and a mix) with strengths from 0.3 to 1; int8-static calibrates
  under the same conditions. An arbitrary-style student's style predictor (Magenta's, the weights
  ``magenta_weights`` names) is traced, checked against torch (``tolerance``) and written first, beside ``out``, as
  ``<stem>.predict.onnx`` (an existing one is refused unless ``force``); the model's metadata names it and its
  sha256, as ``export_magenta``'s transformer does.

Optimisation engines (the registry's methods ``gatys`` and ``lite``, lite encoder folders) have no network that maps
a photo to a picture, so they are refused. Opset: torch's exporter writes opset 18 and up (asked for 17 it writes 18:
onnx's down-converter has no adapter for Pad), so the range is 18 .. the installed onnx package's newest opset.
"""

from .common import (DEFAULT_CALIBRATION_COUNT, DEFAULT_CALIBRATION_SIZE, DEFAULT_MIN_PSNR, DEFAULT_OPSET,
                     DEFAULT_TOLERANCE, MIN_OPSET, QUANTIZE_CHOICES, ExportReport, max_opset)
from .magenta import MagentaExportReport, export_magenta
from .onnx import export_onnx

__all__ = ["export_onnx", "export_magenta", "MagentaExportReport", "ExportReport", "QUANTIZE_CHOICES", "DEFAULT_OPSET",
           "MIN_OPSET", "DEFAULT_TOLERANCE", "DEFAULT_MIN_PSNR", "DEFAULT_CALIBRATION_SIZE", "DEFAULT_CALIBRATION_COUNT",
           "max_opset"]
