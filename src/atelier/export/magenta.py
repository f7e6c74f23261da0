"""``atelier export magenta``: Magenta's arbitrary-style network as two ONNX files, checked against torch.

``export_magenta(out, *, weights=None, opset=18, check=True, force=False, tolerance=1e-3) -> MagentaExportReport``

- ``out`` (``magenta.onnx``): the transformer, inputs ``image`` float32 ``[batch,3,height,width]`` RGB in [0,1]
  (``height, width >= 8``: the graph pads to a multiple of 4 itself; the runtime pads smaller pictures) and
  ``embedding`` ``[batch,100]``, output ``stylized`` ``[batch,3,height,width]``. The graph is
  ``nets.magenta_phase.PhaseTransformer``: the same function as the torch net, its full-resolution expand layers
  computed at half resolution (in onnxruntime 1.3x faster than the net exported as it is, and 1.5x (512 px) to 2.9x
  (2048 px) faster than the method's torch net: ``benchmarks/magenta_onnx.py``).
- ``<stem>.predict.onnx`` beside it: the style predictor, input ``style`` ``[batch,3,256,256]``, output
  ``embedding`` ``[batch,100]``. The style is always a 256x256 square (the method crops and resizes it), so its size
  is fixed.

Two files rather than one graph with both inputs: the predictor runs once per style and the transformer once per
photo, so a caller with a cached embedding (a folder of photos in one style) runs the transformer alone; one graph
would recompute the style every call, or need the style input even when it is not used. The transformer's metadata
names the predictor's file and sha256, so the runtime refuses a pair from different exports.

Metadata (``atelier.*``, read by ``atelier.runtime_magenta``): ``export_format``, ``kind`` (``magenta`` /
``magenta-predictor``), ``name``, ``source`` (the weights' identity), ``licence`` (Apache-2.0), ``inputs`` and
``outputs`` (what they hold, in words), ``style_size``, ``embedding_size``, ``pad_multiple``, ``min_size``,
``min_input``, ``version``, ``opset``, ``quantize``, ``parity_max_abs_diff``; the transformer also ``predictor``,
``predictor_sha256``, ``graph`` and ``style_load_side`` (the long side the method loads style images at, which the
runtime copies).

Checks, before anything is written: ``onnx.checker`` on both; the predictor's embeddings against torch on the
bundled paintings and synthetic images; the transformer, through the runtime's own code path, against the torch
``StyleTransformer`` (the method's net, not the rearranged one) at 97x131, 341x512, 512x341, 130x258, 8x8, 9x13 and
3x5 (non-multiples of 4, the graph's minimum and below it), on synthetic images and real pictures with real
embeddings. Either differing by more than ``tolerance`` (max abs) refuses the export. int8 is refused: measured no
faster than fp32, and below 30 dB PSNR at 2048 px (``benchmarks/magenta_onnx.py``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .. import __version__
from ..errors import AtelierError, OptionError
from ..files import atomic_write_bytes
from ..options import check_number
from ..runtime import INPUT_NAME, METADATA_PREFIX, OUTPUT_NAME, PLAIN_FORMAT, resize_array, to_array
from ..runtime_magenta import (EMBEDDING_NAME, EMBEDDING_SIZE, KIND, MIN_SIZE, PAD_MULTIPLE, PREDICTOR_KIND,
                               STYLE_NAME, STYLE_SIZE, MagentaStylizer, style_square)
from .checks import _sample_photos, checked, smooth
from .common import (DEFAULT_OPSET, DEFAULT_TOLERANCE, MIN_OPSET, PathLike, check_output, max_opset,
                     onnx_modules, quiet, refuse_existing, tidy_model)

METHOD = "magenta"
PREDICTOR_SUFFIX = ".predict.onnx"
CHECK_SIZES = ((97, 131), (341, 512), (512, 341), (130, 258), (8, 8), (9, 13), (3, 5))
TRACE_HW = (67, 93)  # off every check size
INT8_REFUSAL = ("is not available for magenta: int8 was measured no faster than fp32 in onnxruntime, and below 30 "
                "dB at 2048 px (benchmarks/magenta_onnx.py); export fp32")


def predictor_path(out: PathLike) -> Path:
    """``magenta.onnx`` -> ``magenta.predict.onnx`` (beside it)."""
    path = Path(out)
    return path.with_name(path.stem + PREDICTOR_SUFFIX)


@dataclass
class MagentaExportReport:
    """What ``export_magenta`` wrote and measured."""

    path: str
    predictor_path: str
    source: str
    opset: int
    bytes: int
    predictor_bytes: int
    checked: bool
    tolerance: float
    max_abs_diff: Optional[float]            # transformer: worst |onnx - torch| over the check images
    embedding_max_abs_diff: Optional[float]  # predictor: worst |onnx - torch| over the check styles
    parity: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        mb, pmb = self.bytes / 2 ** 20, self.predictor_bytes / 2 ** 20
        text = (f"wrote {self.path} ({mb:.2f} MB, the transformer) and {self.predictor_path} ({pmb:.2f} MB, the "
                f"style predictor), fp32, opset {self.opset}, from {self.source}")
        if not self.checked:
            return text + "; not checked (check=False)"
        return (text + f"; max |onnx - torch| {self.max_abs_diff:.2g} over {len(self.parity)} images, embeddings "
                       f"{self.embedding_max_abs_diff:.2g} (limit {self.tolerance:g})")


def _trace(module: torch.nn.Module, args: tuple, dynamic: tuple, inputs: list[str], outputs: list[str],
           dims: dict[str, list[Optional[str]]], opset: int, what: str) -> Any:
    """``torch.export`` + torch's ONNX exporter; dimensions named, per-node debugging metadata dropped."""
    try:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.export.export(module, args, dynamic_shapes=dynamic)
            onnx_program = torch.onnx.export(program, args, dynamo=True, input_names=inputs, output_names=outputs,
                                             opset_version=opset, external_data=False, optimize=True, verbose=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AtelierError(f"torch could not export the magenta {what} to ONNX ({type(e).__name__}: {first[:200]}); "
                           "please report this") from None
    model = onnx_program.model_proto
    return tidy_model(model, opset, dims)


def _metadata(model: Any, nets: Any, kind: str, opset: int, inputs: str, outputs: str, diff: Optional[float],
              extra: dict[str, str]) -> None:
    from ..nets.magenta_port import LICENCE, NAME

    onnx, _ = onnx_modules()
    props = {"export_format": str(PLAIN_FORMAT), "kind": kind, "name": NAME, "source": nets.identity,
             "licence": LICENCE, "inputs": inputs, "outputs": outputs, "style_size": str(STYLE_SIZE),
             "embedding_size": str(EMBEDDING_SIZE), "pad_multiple": str(PAD_MULTIPLE), "min_size": str(MIN_SIZE),
             "min_input": str(MIN_SIZE), "version": __version__, "opset": str(opset), "quantize": "none",
             "pixels": "float32 NCHW RGB in [0,1]", "parity_max_abs_diff": "" if diff is None else f"{diff:.3g}",
             **extra}
    onnx.helper.set_model_props(model, {METADATA_PREFIX + k: v for k, v in props.items()})
    what = "style predictor" if kind == PREDICTOR_KIND else "transformer"
    model.doc_string = f"atelier magenta {what} ({NAME}, Apache-2.0 weights); run with atelier.runtime"


def trace_predictor(nets: Any, opset: int) -> Any:
    """The style predictor traced to ONNX (input ``style`` ``[batch,3,256,256]``, output ``embedding``)."""
    dyn = torch.export.Dim.DYNAMIC
    style = torch.from_numpy(np.concatenate([smooth(STYLE_SIZE, STYLE_SIZE, 4), smooth(STYLE_SIZE, STYLE_SIZE, 5)]))
    return _trace(nets.predictor, (style,), ({0: dyn},), [STYLE_NAME], [EMBEDDING_NAME],
                  {STYLE_NAME: ["batch", None, None, None], EMBEDDING_NAME: ["batch", None]}, opset, "predictor")


def predictor_bytes(pproto: Any, nets: Any, opset: int, diff: Optional[float]) -> bytes:
    """The traced predictor with its metadata (``diff``: the measured parity, None before the checks), checked."""
    onnx, _ = onnx_modules()
    _metadata(pproto, nets, PREDICTOR_KIND, opset, f"{STYLE_NAME}: float32 [batch,3,{STYLE_SIZE},{STYLE_SIZE}] "
              f"RGB in [0,1], a style image's centre square resized to {STYLE_SIZE} (bicubic, antialiased)",
              f"{EMBEDDING_NAME}: float32 [batch,{EMBEDDING_SIZE}], the style embedding", diff, {})
    checked(onnx, pproto)
    return pproto.SerializeToString()


def _style_load_side() -> int:
    """The long side the method loads style images at (0: their own size), which the runtime copies."""
    from ..methods.magenta import MagentaMethod
    from ..options import StylizeOptions

    return int(MagentaMethod().style_side(StylizeOptions()) or 0)


def _check_styles() -> list[tuple[str, np.ndarray]]:
    """Real paintings (the bundled ones) and synthetic images, as [1,3,H,W] float32."""
    from ..examples import BUNDLED_STYLES, bundled_style

    out = [(name, to_array(bundled_style(name))) for name in BUNDLED_STYLES]
    return out + [("smooth", smooth(300, 200, 21)), ("noise", np.random.default_rng(22).random((1, 3, 96, 160),
                                                                                                dtype=np.float32))]


def _check_pictures(styles: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(23)
    pictures = [(f"smooth {h}x{w}", smooth(h, w, 30 + i)) for i, (h, w) in enumerate(CHECK_SIZES)]
    pictures.append(("noise 97x131", rng.random((1, 3, 97, 131), dtype=np.float32)))
    real = [(name, a) for name, a in styles if name not in ("smooth", "noise")] + _sample_photos()
    for name, a in real:  # real pictures at 341 px long side (an odd short side) to keep the check quick
        h, w = a.shape[-2:]
        s = 341 / max(h, w)
        pictures.append((name, resize_array(a, (max(8, round(h * s)), max(8, round(w * s))))))
    return pictures


def predictor_parity(nets: Any, session: Any, styles: list[tuple[str, np.ndarray]], tolerance: float,
                     path: Path) -> tuple[list[np.ndarray], float]:
    """The torch predictor's embeddings ``[1,100]`` of ``styles`` (their centre squares at 256) and the worst
    |onnx - torch| over them (``session``: the ONNX predictor's); refuses above ``tolerance``."""
    embeddings, worst = [], 0.0
    for name, a in styles:
        square = style_square(a)
        with torch.inference_mode():
            want = nets.predictor(torch.from_numpy(square)).numpy()
        got = session.run([EMBEDDING_NAME], {STYLE_NAME: square})[0]
        worst = max(worst, float(np.abs(got - want).max()))
        embeddings.append(want)
    if not worst <= tolerance:  # NaN fails too
        raise AtelierError(f"refusing to write {path}: the ONNX style predictor differs from torch by {worst:.3g} "
                           f"(limit {tolerance:g}); the export is broken, please report it")
    return embeddings, worst


def _parity(nets: Any, stylizer: MagentaStylizer, tolerance: float, path: Path) -> tuple[list[dict], float, float]:
    styles = _check_styles()
    rows: list[dict] = []
    embeddings, worst_e = predictor_parity(nets, stylizer.predictor, styles, tolerance, path)
    embeddings.append(np.mean(embeddings[:3], axis=0))  # a mix of the paintings
    for i, (name, x) in enumerate(_check_pictures(styles)):
        e = embeddings[i % len(embeddings)]
        with torch.inference_mode():
            want = nets.transformer(torch.from_numpy(x), torch.from_numpy(e)).numpy()
        got = stylizer.run(x, e)
        rows.append({"image": name, "hw": list(x.shape[-2:]), "max_abs_diff": float(np.abs(got - want).max())})
    worst = max(r["max_abs_diff"] for r in rows)
    if not worst <= tolerance:  # NaN fails too
        bad = max(rows, key=lambda r: r["max_abs_diff"])
        raise AtelierError(f"refusing to write {path}: the ONNX transformer differs from torch by {worst:.3g} (limit "
                           f"{tolerance:g}) on {bad['image']} {bad['hw'][0]}x{bad['hw'][1]}; the export is broken, "
                           "please report it")
    return rows, worst, worst_e


def check_magenta_args(out: PathLike, opset: Any, quantize: Any, calibration: Optional[PathLike], tolerance: Any,
                       force: bool) -> tuple[Path, Path]:
    """The two output paths; every bad argument refused before any work."""
    if quantize != "none":
        raise OptionError("quantize", f"{quantize} " + INT8_REFUSAL if isinstance(quantize, str) else INT8_REFUSAL)
    if calibration is not None:
        raise OptionError("calibration", "is for int8-static, which magenta does not offer; drop it")
    top = max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise OptionError("opset", f"must be a whole number from {MIN_OPSET} to {top}, got {opset!r}")
    check_number("tolerance", tolerance, low=0)
    path = check_output(out, force)
    return path, predictor_out(path, force)


def predictor_out(path: Path, force: bool) -> Path:
    """Where the style predictor goes beside the model ``path``; a ``path`` with a predictor's name, and an existing
    predictor file unless ``force``, are refused."""
    if path.name.endswith(PREDICTOR_SUFFIX):
        raise AtelierError(f"cannot write {path}: names ending in {PREDICTOR_SUFFIX} are for the style predictor, "
                           f"which is written beside the model; choose e.g. {path.name[:-len(PREDICTOR_SUFFIX)]}.onnx")
    predictor = predictor_path(path)
    refuse_existing(predictor, force)
    return predictor


def export_magenta(out: PathLike, *, weights: Optional[str] = None, opset: int = DEFAULT_OPSET,
                   quantize: str = "none", calibration: Optional[PathLike] = None, check: bool = True,
                   force: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> MagentaExportReport:
    """Export the magenta method's nets (``weights``: as ``--magenta-weights``, default the method's own resolution)
    to ``out`` and ``<stem>.predict.onnx`` (see the module docstring). Refuses (``AtelierError``, nothing written) an
    export that fails its checks, and existing files unless ``force``."""
    from ..nets.magenta_phase import PhaseTransformer
    from ..nets.magenta_port import load_magenta

    t0 = time.perf_counter()
    onnx, _ = onnx_modules()
    path, ppath = check_magenta_args(out, opset, quantize, calibration, tolerance, force)
    nets = load_magenta(weights, torch.device("cpu"))  # a missing package or a bad file: one line
    dyn = torch.export.Dim.DYNAMIC
    # Batch 2 in the traces: torch.export specialises a dimension of size 1 to a constant.
    image = torch.from_numpy(np.concatenate([smooth(*TRACE_HW, 1), smooth(*TRACE_HW, 2)]))
    embedding = torch.from_numpy(np.random.default_rng(3).normal(size=(2, EMBEDDING_SIZE)).astype(np.float32))
    proto = _trace(PhaseTransformer(nets.transformer).eval(), (image, embedding), ({0: dyn, 2: dyn, 3: dyn}, {0: dyn}),
                   [INPUT_NAME, EMBEDDING_NAME], [OUTPUT_NAME],
                   {INPUT_NAME: ["batch", None, "height", "width"], EMBEDDING_NAME: ["batch", None],
                    OUTPUT_NAME: ["batch", None, "height", "width"]}, opset, "transformer")
    pproto = trace_predictor(nets, opset)

    def finish(rows_diff: Optional[float], e_diff: Optional[float]) -> tuple[bytes, bytes]:
        pdata = predictor_bytes(pproto, nets, opset, e_diff)
        _metadata(proto, nets, KIND, opset,
                  f"{INPUT_NAME}: float32 [batch,3,height,width] RGB in [0,1], height and width >= {MIN_SIZE}; "
                  f"{EMBEDDING_NAME}: float32 [batch,{EMBEDDING_SIZE}] from the style predictor {ppath.name}",
                  f"{OUTPUT_NAME}: float32 [batch,3,height,width] RGB in (0,1)", rows_diff,
                  {"predictor": ppath.name, "predictor_sha256": hashlib.sha256(pdata).hexdigest(),
                   "graph": "nets.magenta_phase.PhaseTransformer (expand layers at half resolution)",
                   "style_load_side": str(_style_load_side())})
        checked(onnx, proto)
        return proto.SerializeToString(), pdata

    data, pdata = finish(None, None)
    rows: list[dict] = []
    worst = worst_e = None
    if check:
        rows, worst, worst_e = _parity(nets, MagentaStylizer(data, pdata, threads=torch.get_num_threads()),
                                       float(tolerance), path)
        data, pdata = finish(worst, worst_e)
    for p in (path, ppath):
        refuse_existing(p, force)  # again: a file may have appeared while the checks ran
    atomic_write_bytes(ppath, pdata)
    atomic_write_bytes(path, data)
    return MagentaExportReport(path=str(path), predictor_path=str(ppath), source=nets.identity, opset=opset,
                               bytes=len(data), predictor_bytes=len(pdata), checked=bool(check),
                               tolerance=float(tolerance), max_abs_diff=worst, embedding_max_abs_diff=worst_e,
                               parity=rows, seconds=time.perf_counter() - t0)


__all__ = ["export_magenta", "MagentaExportReport", "predictor_path", "predictor_out", "trace_predictor",
           "predictor_bytes", "predictor_parity", "METHOD", "PREDICTOR_SUFFIX", "INT8_REFUSAL"]
