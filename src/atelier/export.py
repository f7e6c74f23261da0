"""Export a student model folder to ONNX, with built-in checks, optionally quantized to int8.

``export_onnx(model, out, opset=18, quantize="none", calibration=None, check=True, ...) -> ExportReport``

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
- the write is atomic (temporary name in the same folder, then rename).

Optimisation engines (the registry's methods ``gatys`` and ``lite``, lite encoder folders) have no network that maps
a photo to a picture, so they are refused. Opset: torch's exporter writes opset 18 and up (asked for 17 it writes 18:
onnx's down-converter has no adapter for Pad), so the range is 18 .. the installed onnx package's newest opset.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from . import __version__, registry
from .checkpoint import read_model_config
from .errors import AtelierError
from .images import atomic_write_bytes, list_images, load_image, resize_long_side
from .methods.feedforward import KIND as STUDENT_KIND
from .methods.feedforward import StudentModel, resolve_model
from .runtime import EXPORT_FORMAT, INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME, OnnxStylizer, resize_array

QUANTIZE_CHOICES = ("none", "int8-dynamic", "int8-static")
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's lowest; asking it for 17 silently gives 18 (its down-converter has no Pad)
DEFAULT_TOLERANCE = 1e-3  # max |onnx - torch| for an fp32 export
DEFAULT_MIN_PSNR = 25.0   # dB of an int8 model against the fp32 one, worst photo-like check image
DEFAULT_CALIBRATION_SIZE = 256  # long side of the calibration images
DEFAULT_CALIBRATION_COUNT = 32  # at most this many calibration images, spread evenly over the sorted folder
CHECK_SIDE = 512  # check images given by path are shrunk to this long side (only shrunk) to keep the check quick
ENGINE_KINDS = ("lite_encoder",)

PathLike = Union[str, "os.PathLike[str]"]
ModelLike = Union[PathLike, StudentModel]


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and measured (``to_dict()`` for JSON, ``summary()`` for a person)."""

    path: str
    source: str                      # the weights' identity, e.g. student:starry-tiny(sha256:...)
    name: str
    generator: str
    opset: int
    quantize: str
    bytes: int                       # size of the written file
    fp32_bytes: int                  # size of the fp32 model (the same as bytes when quantize is "none")
    min_input: int                   # smallest H and W the graph covers without the runtime's own padding
    trace_hw: tuple[int, int]        # the size torch.export traced at (the checks use other sizes)
    checked: bool
    tolerance: float
    max_abs_diff: Optional[float]    # worst |onnx fp32 - torch| over the check images
    parity: list[dict] = field(default_factory=list)   # per image: label, hw, max_abs_diff
    min_psnr: float = DEFAULT_MIN_PSNR
    psnr_db: Optional[float] = None  # worst PSNR of int8 vs fp32 over the photo-like check images
    psnr: list[dict] = field(default_factory=list)     # per image: label, hw, psnr_db, photo_like
    calibration_images: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trace_hw"] = list(self.trace_hw)
        return d

    def summary(self) -> str:
        mb = self.bytes / 2 ** 20
        text = f"wrote {self.path} ({mb:.2f} MB, opset {self.opset}, {self.quantize}) from {self.source}"
        if not self.checked:
            return text + "; not checked (check=False)"
        text += (f"; max |onnx - torch| {self.max_abs_diff:.2g} over {len(self.parity)} images "
                 f"(limit {self.tolerance:g})")
        if self.psnr_db is not None:
            text += f"; int8 vs fp32 PSNR {self.psnr_db:.1f} dB worst photo (limit {self.min_psnr:g} dB)"
        return text


# --------------------------------------------------------------------------------------------- arguments


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch's exporter needs it; fail here with a clear message, not inside)
    except ImportError as e:
        raise AtelierError(f'export needs onnx, onnxscript and onnxruntime ({e.name} is missing); run: '
                           'pip install "atelier[onnx]"') from None
    return onnx, onnxruntime


def max_opset() -> int:
    """The newest opset the installed onnx package knows."""
    onnx, _ = _onnx_modules()
    return int(onnx.defs.onnx_opset_version())


def _check_args(out: PathLike, opset: Any, quantize: Any, calibration: Optional[PathLike], tolerance: Any,
                min_psnr: Any) -> tuple[Path, list[Path]]:
    if quantize not in QUANTIZE_CHOICES:
        raise AtelierError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise AtelierError(f"--opset must be a whole number from {MIN_OPSET} to {top} (torch's exporter writes "
                           f"opset {MIN_OPSET} and up; onnx {top} is the newest installed), got {opset!r}")
    for label, value in (("tolerance", tolerance), ("min_psnr", min_psnr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise AtelierError(f"{label} must be a finite number >= 0, got {value!r}")
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise AtelierError(f"cannot write {path}: an exported model's file name ends in .onnx")
    if path.is_dir():
        raise AtelierError(f"cannot write {path}: it is a directory; give a file name such as {path / 'model.onnx'}")
    parent = path.parent
    if not parent.is_dir():
        raise AtelierError(f"cannot write {path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AtelierError(f"cannot write {path}: directory {parent} is not writable; choose another location or "
                           "fix its permissions")
    images: list[Path] = []
    if quantize == "int8-static":
        if calibration is None:
            raise AtelierError("--quantize int8-static needs --calibration DIR, a folder of photographs like the "
                               "ones the model will see (its activation ranges are measured on them)")
        images = list_images(calibration)  # missing folder, not a folder: one-line errors
        if not images:
            raise AtelierError(f"calibration folder {calibration} has no images (JPEG, PNG, WebP, TIFF, BMP or GIF); "
                               "add some photographs")
    elif calibration is not None:
        raise AtelierError(f"--calibration is used by --quantize int8-static only (not {quantize}); drop it or "
                           "quantize statically")
    return path, images


def _load_student(model: ModelLike) -> StudentModel:
    if isinstance(model, StudentModel):
        return model
    why = ("optimisation engines are not exportable; they optimise each picture instead of running a network, so "
           "there is nothing to export: export a trained student model folder (atelier train student) or a bundled "
           "student such as starry-tiny")
    if isinstance(model, str) and model in registry.names("method"):
        raise AtelierError(f"{model}: {why}")
    folder = resolve_model(model)
    config = read_model_config(folder)  # missing folder, not a folder, damaged config: one-line errors
    if config["kind"] in ENGINE_KINDS:
        raise AtelierError(f"{folder} holds a {config['kind']!r} model: {why}")
    if config["kind"] != STUDENT_KIND:
        raise AtelierError(f"{folder} holds a {config['kind']!r} model, not a {STUDENT_KIND!r} one; only students "
                           "can be exported")
    return StudentModel.from_folder(folder)


# ------------------------------------------------------------------------------------------------ images


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
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


def _check_set(min_input: int, extra: Sequence[Union[PathLike, np.ndarray]]) -> list[tuple[str, np.ndarray, bool]]:
    """(label, [1,3,H,W] float32, photo_like) images for the checks; sizes chosen to differ from the trace size."""
    m = min_input
    images = [("noise", _noise(97, 131, 1), False), ("smooth", _smooth(256, 384, 2), True),
              ("smooth", _smooth(131, 97, 3), True), ("noise", _noise(m, m + 3, 4), False),
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


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for [0,1] images; capped at 100 (identical outputs), so reports stay valid JSON (no Infinity)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else min(100.0, 10.0 * math.log10(1.0 / mse))


# ------------------------------------------------------------------------------------------------ export


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the exporter's and quantizer's chatter (progress lines, "torchvision is not installed", "consider
    pre-processing"): they are about the tools, not about anything the user can act on. Errors still raise."""
    torch_log = logging.getLogger("torch.onnx")
    level = torch_log.level
    torch_log.setLevel(logging.ERROR)

    class _NotQuantizer(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            # onnxruntime.quantization logs through the root logger; only its records are dropped.
            return "onnxruntime" not in record.pathname or record.levelno >= logging.ERROR

    root_filter = _NotQuantizer()
    logging.getLogger().addFilter(root_filter)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        torch_log.setLevel(level)


def _trace_hw(min_input: int) -> tuple[int, int]:
    # Off every check size, not a multiple of anything in particular, and large enough for every generator.
    side = max(64, 2 * min_input)
    return side + 3, side + side // 2 + 5


def _to_onnx(student: StudentModel, opset: int, trace_hw: tuple[int, int]):
    onnx, _ = _onnx_modules()
    gen = student.generator
    # Batch 2: torch.export specialises a dimension of size 1 to a constant, so the trace would fix N = 1.
    x = torch.from_numpy(np.concatenate([_smooth(*trace_hw, 10), _smooth(*trace_hw, 11)]))
    dyn = torch.export.Dim.DYNAMIC
    # Dim.DYNAMIC, not named Dims: the pad's reflect-or-replicate branch yields guards the solver cannot prove
    # for a declared range and a named Dim then fails (or, inside torch.onnx.export's fallbacks, exports a graph
    # that is wrong at non-multiples). DYNAMIC lets torch.export infer the range (H, W >= min_size) itself.
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.export.export(gen, (x,), dynamic_shapes=({0: dyn, 2: dyn, 3: dyn},))
            onnx_program = torch.onnx.export(program, (x,), dynamo=True, input_names=[INPUT_NAME],
                                             output_names=[OUTPUT_NAME], opset_version=opset, external_data=False,
                                             optimize=True, verbose=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AtelierError(f"torch could not export the {gen.name} generator to ONNX ({type(e).__name__}: "
                           f"{first[:200]}); please report this with the model's config.json") from None
    model = onnx_program.model_proto
    got = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if got != [opset]:
        raise AtelierError(f"torch's exporter wrote opset {got[0] if got else '?'} when asked for {opset}; choose "
                           f"--opset {got[0] if got else DEFAULT_OPSET}")
    # Name the symbolic dimensions (the trace calls them s0, s53, ...), and drop what would leak this machine's
    # paths or bloat the file: per-node debugging metadata (source file stack traces) and intermediate shapes.
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, ("batch", None, "height", "width")):
            if name is not None:
                dim.dim_param = name
    del model.graph.value_info[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    return model


def _checked(onnx: Any, proto: Any) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError and shape-inference errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AtelierError(f"the exported model fails onnx's checker ({first[:200]}); please report this") from None


def _set_metadata(model: Any, student: StudentModel, opset: int, quantize: str, min_input: int,
                  parity: Optional[float], psnr: Optional[float]) -> None:
    onnx, _ = _onnx_modules()
    gen = student.generator
    props = {
        "export_format": str(EXPORT_FORMAT), "name": student.name, "kind": STUDENT_KIND, "generator": gen.name,
        "architecture": json.dumps(dict(gen.arch), sort_keys=True), "style": str(student.style or ""),
        "pad_multiple": str(gen.pad_multiple), "min_size": str(gen.min_size), "min_input": str(min_input),
        "version": __version__, "source": student.identity, "opset": str(opset), "quantize": quantize,
        "pixels": "float32 NCHW RGB in [0,1]", "parity_max_abs_diff": "" if parity is None else f"{parity:.3g}",
        "psnr_db": "" if psnr is None else f"{psnr:.2f}",
    }
    onnx.helper.set_model_props(model, {METADATA_PREFIX + k: v for k, v in props.items()})
    model.doc_string = f"atelier student {student.name} ({gen.name} generator); run with atelier.runtime"


def _calibration_reader(files: Sequence[Path], size: int) -> Any:
    """An onnxruntime ``CalibrationDataReader`` over image files, loaded one at a time at long side ``size``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._files = iter(files)

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            path = next(self._files, None)
            return None if path is None else {INPUT_NAME: load_image(path, size=size).numpy()}

    return Reader()


def _spread(files: list[Path], count: int) -> list[Path]:
    """At most ``count`` files spread evenly over the sorted list (a folder of similar names stays varied)."""
    if len(files) <= count:
        return files
    return [files[round(i * (len(files) - 1) / (count - 1))] for i in range(count)] if count > 1 else files[:1]


def _quantize(fp32: bytes, quantize: str, files: list[Path], size: int, tmp: Path) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    src.write_bytes(fp32)
    with _quiet():
        if quantize == "int8-dynamic":
            # Weights quantized once; activations per call from their observed range (ConvInteger). uint8 weights:
            # with int8 ones onnxruntime 1.32's ConvInteger took 351 ms against 55 ms for uint8 (starry-tiny,
            # 512x512, one thread), at the same PSNR.
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        else:
            reader = _calibration_reader(files, size)
            # QDQ, uint8 activations with int8 weights (onnxruntime's recommended CPU pairing), min/max ranges:
            # the histogram calibrators stack every image's activations and so need equal image sizes.
            quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=False, calibrate_method=CalibrationMethod.MinMax)
    return dst.read_bytes()


def export_onnx(model: ModelLike, out: PathLike, opset: int = DEFAULT_OPSET, quantize: str = "none",
                calibration: Optional[PathLike] = None, check: bool = True, *, tolerance: float = DEFAULT_TOLERANCE,
                min_psnr: float = DEFAULT_MIN_PSNR, check_images: Sequence[Union[PathLike, np.ndarray]] = (),
                calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                calibration_count: int = DEFAULT_CALIBRATION_COUNT) -> ExportReport:
    """Export student ``model`` (a folder, a bundled name or a loaded ``StudentModel``) to ``out`` (see the module
    docstring); returns what was written and measured. Refuses (``AtelierError``, nothing written) a model that
    fails its checks."""
    t0 = time.perf_counter()
    onnx, _ = _onnx_modules()
    path, calib_files = _check_args(out, opset, quantize, calibration, tolerance, min_psnr)
    for label, value in (("calibration_size", calibration_size), ("calibration_count", calibration_count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AtelierError(f"{label} must be a whole number >= 1, got {value!r}")
    student = _load_student(model)
    gen = student.generator
    min_input = max(int(gen.min_size), 2 * int(gen.pad_multiple))
    trace_hw = _trace_hw(min_input)
    proto = _to_onnx(student, opset, trace_hw)
    _set_metadata(proto, student, opset, "none", min_input, None, None)
    _checked(onnx, proto)
    fp32 = proto.SerializeToString()

    parity: list[dict] = []
    psnr_rows: list[dict] = []
    worst = worst_psnr = None
    images = _check_set(min_input, check_images) if check else []
    fp32_outputs = []
    if check:
        # As many onnxruntime threads as torch uses here, so OMP_NUM_THREADS / torch settings bound both.
        session = OnnxStylizer(fp32, threads=torch.get_num_threads())
        for label, x, photo in images:
            with torch.no_grad():
                want = student.run(torch.from_numpy(x)).numpy()
            got = session.run(x)
            fp32_outputs.append(got)
            diff = float(np.abs(got - want).max())
            parity.append({"image": label, "hw": list(x.shape[-2:]), "max_abs_diff": diff})
        worst = max(r["max_abs_diff"] for r in parity)
        if not worst <= tolerance:  # written so that NaN fails too
            bad = max(parity, key=lambda r: r["max_abs_diff"])
            raise AtelierError(f"refusing to write {path}: the ONNX model differs from torch by {worst:.3g} (limit "
                               f"{tolerance:g}) on {bad['image']} {bad['hw'][0]}x{bad['hw'][1]}; the export is "
                               "broken, please report it")
    _set_metadata(proto, student, opset, "none", min_input, worst, None)
    fp32 = proto.SerializeToString()
    data = fp32

    used = _spread(calib_files, calibration_count)
    if quantize != "none":
        with tempfile.TemporaryDirectory(prefix="atelier-export-") as tmp:
            try:
                data = _quantize(fp32, quantize, used, calibration_size, Path(tmp))
            except AtelierError:
                raise
            except Exception as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise AtelierError(f"onnxruntime could not quantize the model ({type(e).__name__}: {first[:200]}); "
                                   "export without --quantize") from None
        qproto = onnx.load_from_string(data)
        if check:
            qsession = OnnxStylizer(data, threads=torch.get_num_threads())
            for (label, x, photo), ref in zip(images, fp32_outputs):
                psnr_rows.append({"image": label, "hw": list(x.shape[-2:]), "photo_like": photo,
                                  "psnr_db": _psnr(qsession.run(x), ref)})
            # Photo-like images only: uniform noise drives activations far outside any photo's calibrated range,
            # and the model is for photographs. Noise rows are still reported.
            worst_psnr = min(r["psnr_db"] for r in psnr_rows if r["photo_like"])
            if not worst_psnr >= min_psnr:
                bad = min((r for r in psnr_rows if r["photo_like"]), key=lambda r: r["psnr_db"])
                raise AtelierError(f"refusing to write {path}: the {quantize} model's output is {worst_psnr:.1f} dB "
                                   f"PSNR from the fp32 model's on {bad['image']} (limit {min_psnr:g} dB); export "
                                   "fp32, try the other int8 mode, or calibrate on more typical photographs")
        _set_metadata(qproto, student, opset, quantize, min_input, worst, worst_psnr)
        _checked(onnx, qproto)
        data = qproto.SerializeToString()
    atomic_write_bytes(path, data)
    return ExportReport(path=str(path), source=student.identity, name=student.name, generator=gen.name, opset=opset,
                        quantize=quantize, bytes=len(data), fp32_bytes=len(fp32), min_input=min_input,
                        trace_hw=trace_hw, checked=bool(check), tolerance=float(tolerance), max_abs_diff=worst,
                        parity=parity, min_psnr=float(min_psnr), psnr_db=worst_psnr, psnr=psnr_rows,
                        calibration_images=len(used), seconds=time.perf_counter() - t0)
