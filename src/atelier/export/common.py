"""What the export modules share: the defaults, ``ExportReport``, the optional tools (onnx, onnxruntime,
onnxscript), the quiet context, and the checks of the arguments and of the model (before any tracing)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .. import registry
from ..errors import AtelierError, OptionError
from ..files import check_writable_parent
from ..folders import read_model_config
from ..images import list_images
from ..methods.feedforward import KIND as STUDENT_KIND
from ..methods.feedforward import StudentModel, resolve_model
from ..options import check_number

QUANTIZE_CHOICES = ("none", "int8-dynamic", "int8-static")
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's lowest; asking it for 17 silently gives 18 (its down-converter has no Pad)
DEFAULT_TOLERANCE = 1e-3  # max |onnx - torch| for an fp32 export
DEFAULT_MIN_PSNR = 25.0   # dB of an int8 model against the fp32 one, worst photo-like check image
DEFAULT_CALIBRATION_SIZE = 256  # long side of the calibration images
DEFAULT_CALIBRATION_COUNT = 32  # at most this many calibration images, spread evenly over the sorted folder
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
    condition: Optional[str] = None          # conditional students: "styles" or "magenta-embedding"
    # arbitrary-style students: what embeds style images (the style encoder or Magenta's predictor), beside path
    predictor_path: Optional[str] = None
    predictor_bytes: int = 0
    embedding_max_abs_diff: Optional[float] = None  # the predictor's worst |onnx - torch| over the check styles

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trace_hw"] = list(self.trace_hw)
        return d

    def summary(self) -> str:
        mb = self.bytes / 2 ** 20
        text = f"wrote {self.path} ({mb:.2f} MB, opset {self.opset}, {self.quantize}) from {self.source}"
        if self.predictor_path:
            text += f", and what embeds its style images {self.predictor_path} ({self.predictor_bytes / 2 ** 20:.2f} MB)"
        if not self.checked:
            return text + "; not checked (check=False)"
        what = "checks (images x conditions)" if self.condition else "images"
        text += (f"; max |onnx - torch| {self.max_abs_diff:.2g} over {len(self.parity)} {what} "
                 f"(limit {self.tolerance:g})")
        if self.embedding_max_abs_diff is not None:
            text += f", style embeddings {self.embedding_max_abs_diff:.2g}"
        if self.psnr_db is not None:
            text += f"; int8 vs fp32 PSNR {self.psnr_db:.1f} dB worst photo (limit {self.min_psnr:g} dB)"
        return text


def onnx_modules() -> tuple[Any, Any]:
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
    onnx, _ = onnx_modules()
    return int(onnx.defs.onnx_opset_version())


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


def refuse_existing(path: Path, force: bool) -> None:
    """An existing output is replaced only when asked (``force``; the CLI's ``--force``)."""
    if path.exists() and not force:
        raise OptionError("force", f"is needed to replace {path}, which already exists (or choose another output "
                                   "file)")


def check_output(out: PathLike, force: bool) -> Path:
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise AtelierError(f"cannot write {path}: an exported model's file name ends in .onnx")
    if path.is_dir():
        raise AtelierError(f"cannot write {path}: it is a directory; give a file name such as {path / 'model.onnx'}")
    check_writable_parent(path)
    refuse_existing(path, force)
    return path


def check_args(out: PathLike, opset: Any, quantize: Any, calibration: Optional[PathLike], tolerance: Any,
               min_psnr: Any, force: bool = False) -> tuple[Path, list[Path]]:
    """The output path and the calibration images; every bad argument is refused before any work."""
    if quantize not in QUANTIZE_CHOICES:
        raise OptionError("quantize", f"must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise OptionError("opset", f"must be a whole number from {MIN_OPSET} to {top} (torch's exporter writes "
                                   f"opset {MIN_OPSET} and up; onnx {top} is the newest installed), got {opset!r}")
    for name, value in (("tolerance", tolerance), ("min_psnr", min_psnr)):
        check_number(name, value, low=0)
    path = check_output(out, force)
    images: list[Path] = []
    if quantize == "int8-static":
        if calibration is None:
            raise OptionError("calibration", "is required with quantize int8-static: a folder of photographs like "
                                             "the ones the model will see (its activation ranges are measured on "
                                             "them)")
        images = list_images(calibration)  # missing folder, not a folder: one-line errors
        if not images:
            raise OptionError("calibration", f"folder {calibration} has no images (JPEG, PNG, WebP, TIFF, BMP or "
                                             "GIF); add some photographs")
    elif calibration is not None:
        raise OptionError("calibration", f"is used by quantize int8-static only (not {quantize}); drop it or "
                                         "quantize statically")
    return path, images


def load_student(model: ModelLike) -> StudentModel:
    """The student to export; optimisation engines, lite encoders and other kinds are refused with one line."""
    if isinstance(model, StudentModel):
        return model
    why = ("optimisation engines are not exportable; they optimise each picture instead of running a network, so "
           "there is nothing to export: export a trained student model folder (atelier train student) or a bundled "
           "student such as starry-tiny")
    if isinstance(model, str) and model == "magenta":
        raise AtelierError("magenta is exported by atelier.export.export_magenta (atelier export magenta -o "
                           "magenta.onnx), which writes its transformer and style predictor")
    if isinstance(model, str) and model in registry.names("method"):
        # Registered methods include the bundled students (kind "student", exportable); the others are not.
        if getattr(registry.create("method", model), "kind", None) != STUDENT_KIND:
            raise AtelierError(f"{model}: {why}")
    folder = resolve_model(model)
    config = read_model_config(folder)  # missing folder, not a folder, damaged config: one-line errors
    if config["kind"] in ENGINE_KINDS:
        raise AtelierError(f"{folder} holds a {config['kind']!r} model: {why}")
    if config["kind"] != STUDENT_KIND:
        raise AtelierError(f"{folder} holds a {config['kind']!r} model, not a {STUDENT_KIND!r} one; only students "
                           "can be exported")
    return StudentModel.from_folder(folder)


def tidy_model(model: Any, opset: int, dims: dict[str, tuple]) -> Any:
    """An exported ModelProto checked and tidied: its default-domain opset must be ``opset``; the symbolic dimensions
    of each input and output get names (``dims[name]``, None keeps one fixed; the trace calls them s0, s53, ...); and
    what would leak this machine's paths or bloat the file goes (per-node debugging metadata, intermediate shapes)."""
    got = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if got != [opset]:
        raise AtelierError(f"torch's exporter wrote opset {got[0] if got else '?'} when asked for {opset}; choose "
                           f"--opset {got[0] if got else DEFAULT_OPSET}")
    for value in list(model.graph.input) + list(model.graph.output):
        for dim, name in zip(value.type.tensor_type.shape.dim, dims[value.name]):
            if name is not None:
                dim.dim_param = name
    del model.graph.value_info[:]
    for node in model.graph.node:
        del node.metadata_props[:]
    return model

