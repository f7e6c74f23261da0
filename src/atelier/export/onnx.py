"""The export itself: trace the student's generator with ``torch.export`` (batch, height and width dynamic),
translate it with torch's ONNX exporter, name the dimensions, record the metadata, run the checks (``checks.py``),
quantize if asked (``quantize.py``) and write the file atomically. A conditional student's extra inputs, metadata,
check conditions and style predictor come from ``cond.py``."""

from __future__ import annotations

import json
import time
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from .. import __version__
from ..errors import AtelierError
from ..files import atomic_write_bytes
from ..methods.feedforward import KIND as STUDENT_KIND
from ..methods.feedforward import StudentModel
from ..options import check_number
from ..runtime import COND_NAME, INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME, PLAIN_FORMAT, STRENGTH_NAME
from .checks import check_set, checked, parity, psnr_gate, smooth, with_conditions
from .common import (DEFAULT_CALIBRATION_COUNT, DEFAULT_CALIBRATION_SIZE, DEFAULT_MIN_PSNR, DEFAULT_OPSET,
                     DEFAULT_TOLERANCE, ExportReport, ModelLike, PathLike, check_args, load_student,
                     onnx_modules, quiet, refuse_existing, tidy_model)
from .cond import conditioning, example_inputs, report_fields
from .quantize import calibration_items, quantize_model, spread


def trace_hw(min_input: int) -> tuple[int, int]:
    # Off every check size, not a multiple of anything in particular, and large enough for every generator.
    side = max(64, 2 * min_input)
    return side + 3, side + side // 2 + 5


def _to_onnx(student: StudentModel, opset: int, trace_hw: tuple[int, int]) -> Any:
    onnx, _ = onnx_modules()
    gen = student.generator
    # Batch 2: torch.export specialises a dimension of size 1 to a constant, so the trace would fix N = 1.
    x = torch.from_numpy(np.concatenate([smooth(*trace_hw, 10), smooth(*trace_hw, 11)]))
    dyn = torch.export.Dim.DYNAMIC
    # Dim.DYNAMIC, not named Dims: the pad's reflect-or-replicate branch yields guards the solver cannot prove
    # for a declared range and a named Dim then fails (or, inside torch.onnx.export's fallbacks, exports a graph
    # that is wrong at non-multiples). DYNAMIC lets torch.export infer the range (H, W >= min_size) itself.
    args, shapes, names = (x,), ({0: dyn, 2: dyn, 3: dyn},), [INPUT_NAME]
    if student.condition is not None:  # a conditional student: cond [batch, n] and strength [batch] too
        args, shapes, names = args + example_inputs(student), shapes + ({0: dyn}, {0: dyn}), names + [COND_NAME,
                                                                                                     STRENGTH_NAME]
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.export.export(gen, args, dynamic_shapes=shapes)
            onnx_program = torch.onnx.export(program, args, dynamo=True, input_names=names,
                                             output_names=[OUTPUT_NAME], opset_version=opset, external_data=False,
                                             optimize=True, verbose=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AtelierError(f"torch could not export the {gen.name} generator to ONNX ({type(e).__name__}: "
                           f"{first[:200]}); please report this with the model's config.json") from None
    model = onnx_program.model_proto
    return tidy_model(model, opset, {INPUT_NAME: ("batch", None, "height", "width"), COND_NAME: ("batch", None),
                                     STRENGTH_NAME: ("batch",), OUTPUT_NAME: ("batch", None, "height", "width")})


def set_metadata(model: Any, student: StudentModel, opset: int, quantize: str, min_input: int,
                 parity_diff: Optional[float], psnr: Optional[float], extra: Optional[dict[str, str]] = None) -> None:
    """The ``atelier.*`` metadata (``extra``: a conditional student's, ``cond.py``)."""
    onnx, _ = onnx_modules()
    gen = student.generator
    props = {
        "export_format": str(PLAIN_FORMAT), "name": student.name, "kind": STUDENT_KIND, "generator": gen.name,
        "architecture": json.dumps(dict(gen.arch), sort_keys=True), "style": str(student.style or ""),
        "pad_multiple": str(gen.pad_multiple), "min_size": str(gen.min_size), "min_input": str(min_input),
        "version": __version__, "source": student.identity, "opset": str(opset), "quantize": quantize,
        "pixels": "float32 NCHW RGB in [0,1]",
        "parity_max_abs_diff": "" if parity_diff is None else f"{parity_diff:.3g}",
        "psnr_db": "" if psnr is None else f"{psnr:.2f}", **(extra or {}),
    }
    onnx.helper.set_model_props(model, {METADATA_PREFIX + k: v for k, v in props.items()})
    model.doc_string = f"atelier student {student.name} ({gen.name} generator); run with atelier.runtime"


def export_onnx(model: ModelLike, out: PathLike, opset: int = DEFAULT_OPSET, quantize: str = "none",
                calibration: Optional[PathLike] = None, check: bool = True, *, force: bool = False,
                tolerance: float = DEFAULT_TOLERANCE, min_psnr: float = DEFAULT_MIN_PSNR,
                check_images: Sequence[Union[PathLike, np.ndarray]] = (),
                calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                calibration_count: int = DEFAULT_CALIBRATION_COUNT,
                magenta_weights: Optional[str] = None, style_encoder: Optional[str] = None) -> ExportReport:
    """Export student ``model`` (a folder, a bundled name or a loaded ``StudentModel``) to ``out`` (see the package
    docstring); returns what was written and measured. Refuses (``AtelierError``, nothing written) a model that
    fails its checks, and an existing ``out`` unless ``force``. What embeds an arbitrary-style student's style images
    is written beside ``out`` as ``<stem>.predict.onnx``: ``style_encoder`` and ``magenta_weights`` choose it as
    ``atelier stylize --style-encoder/--magenta-weights`` do (default: the bundled style encoder)."""
    t0 = time.perf_counter()
    onnx, _ = onnx_modules()
    path, calib_files = check_args(out, opset, quantize, calibration, tolerance, min_psnr, force)
    for name, value in (("calibration_size", calibration_size), ("calibration_count", calibration_count)):
        check_number(name, value, low=1, whole=True)
    student = load_student(model)
    cond = conditioning(student, path, opset, check, float(tolerance), force, magenta_weights, style_encoder)
    extra = cond.props if cond is not None else None
    conditions = cond.conditions if cond is not None else []
    predictor = cond.predictor if cond is not None else None
    gen = student.generator
    min_input = max(int(gen.min_size), 2 * int(gen.pad_multiple))
    hw = trace_hw(min_input)
    proto = _to_onnx(student, opset, hw)
    set_metadata(proto, student, opset, "none", min_input, None, None, extra)
    checked(onnx, proto)

    rows: list[dict] = []
    psnr_rows: list[dict] = []
    worst = worst_psnr = None
    images = with_conditions(check_set(min_input, check_images), conditions) if check else []
    fp32_outputs: list[np.ndarray] = []
    if check:
        rows, worst, fp32_outputs = parity(student, proto.SerializeToString(), images, tolerance, path, predictor)
    set_metadata(proto, student, opset, "none", min_input, worst, None, extra)
    fp32 = proto.SerializeToString()
    data = fp32

    used = spread(calib_files, calibration_count)
    if quantize != "none":
        data = quantize_model(fp32, quantize, calibration_items(used, [(c, s) for _, c, s in conditions]),
                              calibration_size)
        qproto = onnx.load_from_string(data)
        if check:
            psnr_rows, worst_psnr = psnr_gate(data, quantize, images, fp32_outputs, min_psnr, path, predictor)
        set_metadata(qproto, student, opset, quantize, min_input, worst, worst_psnr, extra)
        checked(onnx, qproto)
        data = qproto.SerializeToString()
    ppath = cond.predictor_path if cond is not None else None
    for p in (path, ppath):
        if p is not None:
            refuse_existing(p, force)  # again: a file may have appeared while the checks ran
    if ppath is not None and predictor is not None:
        atomic_write_bytes(ppath, predictor)  # first: a model never sits beside a missing or older predictor
    atomic_write_bytes(path, data)
    return ExportReport(path=str(path), source=student.identity, name=student.name, generator=gen.name, opset=opset,
                        quantize=quantize, bytes=len(data), fp32_bytes=len(fp32), min_input=min_input,
                        trace_hw=hw, checked=bool(check), tolerance=float(tolerance), max_abs_diff=worst,
                        parity=rows, min_psnr=float(min_psnr), psnr_db=worst_psnr, psnr=psnr_rows,
                        calibration_images=len(used), seconds=time.perf_counter() - t0, **report_fields(cond))
