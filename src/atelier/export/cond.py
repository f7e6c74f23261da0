"""What a conditional student's export adds (``nets/cond.py``; read by ``atelier.runtime``, whose docstring lists the
metadata): the ``cond`` and ``strength`` inputs traced beside ``image``, the condition's metadata, and the conditions
the checks and the int8 calibration run under. An arbitrary-style student also gets what embeds its style images,
chosen as ``atelier stylize`` chooses (``methods.style_encoding.choose_embedder``: ``style_encoder``,
``magenta_weights``): by default the distilled style encoder (``style_encoder.py``), else Magenta's style predictor
(``torch`` port; the file ``atelier export magenta`` writes); traced, checked against torch and written beside the
model as ``<stem>.predict.onnx``, which the runtime runs either way (``runtime_magenta.StylePredictor``).

The checks' conditions: a style set's one-hot rows and an equal mix of all its styles; an arbitrary student's
embeddings (by the torch encoder or predictor) of the bundled paintings, a photo-like and a noise image, and a mix of
the paintings. Strengths cycle through ``STRENGTHS`` so the in-graph blend with the photo is checked too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import OptionError
from ..methods.feedforward import StudentModel
from ..options import StylizeOptions
from ..runtime import COND_NAME, EXPORT_FORMAT, INPUT_NAME, STRENGTH_NAME, open_session
from ..runtime_magenta import EMBEDDING_SIZE, STYLE_SIZE, style_square
from .checks import Condition

STRENGTHS = (1.0, 0.55, 0.8, 0.3)


@dataclass
class Conditioning:
    """A conditional student's share of the export."""

    kind: str                                   # "styles" or "magenta-embedding"
    props: dict[str, str]                       # metadata (without the prefix), beside the student's own
    conditions: list[Condition] = field(default_factory=list)  # what the checks and the calibration run under
    predictor_path: Optional[Path] = None       # arbitrary-style students: the style predictor's file ...
    predictor: Optional[bytes] = None           # ... and its bytes
    embedding_max_abs_diff: Optional[float] = None  # worst |onnx - torch| of the predictor (when checked)


def example_inputs(student: StudentModel) -> tuple[torch.Tensor, torch.Tensor]:
    """A condition ``[2, cond_dim]`` and strengths ``[2]`` for the trace (batch 2, as the image's)."""
    dim = int(student.generator.arch["cond_dim"])
    cond = np.random.default_rng(12).dirichlet(np.ones(dim), size=2).astype(np.float32)
    return torch.from_numpy(cond), torch.tensor([0.4, 0.9])


def _refuse_weights(magenta_weights: Optional[str], style_encoder: Optional[str], kind: Optional[str]) -> None:
    what = "a style set" if kind == "styles" else "a student with its style built in"
    for field_name, value in (("magenta_weights", magenta_weights), ("style_encoder", style_encoder)):
        if value is not None:
            raise OptionError(field_name, f"is for arbitrary-style students (what embeds their style images), not "
                                          f"{what}; drop it")


def _inputs(dim: int, what: str) -> str:
    return (f"{INPUT_NAME}: float32 [batch,3,height,width] RGB in [0,1]; {COND_NAME}: float32 [batch,{dim}], {what}; "
            f"{STRENGTH_NAME}: float32 [batch] in [0,1] (0: the photo, 1: the full style)")


def conditioning(student: StudentModel, path: Path, opset: int, check: bool, tolerance: float, force: bool,
                 magenta_weights: Optional[str] = None, style_encoder: Optional[str] = None) -> Optional[Conditioning]:
    """None for a student with its style built in; else the conditional student's share of the export (an
    arbitrary-style student's style encoder or predictor traced, and checked when ``check``). Refuses an existing
    predictor file unless ``force``."""
    kind = student.condition
    if kind != "magenta-embedding":
        _refuse_weights(magenta_weights, style_encoder, kind)
    if kind is None:
        return None
    dim = int(student.generator.arch["cond_dim"])
    props = {"export_format": str(EXPORT_FORMAT), "condition": kind, "cond_dim": str(dim)}
    if kind == "styles":
        names, images = student.style_names, student.config["condition"].get("style_images") or []
        props.update(styles=json.dumps(names), style_images=json.dumps(images),
                     inputs=_inputs(dim, "a convex mix of one-hot rows, one column per name of atelier.styles"))
        hot = np.eye(dim, dtype=np.float32)
        conditions = [(n, hot[i:i + 1], STRENGTHS[i % len(STRENGTHS)]) for i, n in enumerate(names)]
        return Conditioning(kind, props, conditions + [("equal mix", np.full((1, dim), 1 / dim, np.float32), 0.7)])
    return _arbitrary(student, path, opset, check, tolerance, force, magenta_weights, style_encoder, props)


def _arbitrary(student: StudentModel, path: Path, opset: int, check: bool, tolerance: float, force: bool,
               magenta_weights: Optional[str], style_encoder: Optional[str], props: dict[str, str]) -> Conditioning:
    from ..methods.style_encoding import STYLE_LOAD_SIDE, STYLE_MIN_SIDE, choose_embedder, is_encoder
    from .magenta import _check_styles, predictor_bytes, predictor_out, predictor_parity, trace_predictor
    from .style_encoder import encoder_bytes, encoder_parity, trace_encoder

    ppath = predictor_out(path, force)  # before any work
    StylizeOptions.from_kwargs(style_encoder=style_encoder)  # a malformed value: the line atelier stylize gives
    # The style encoder (the default) or Magenta's predictor, chosen as atelier stylize chooses; a missing package or
    # a bad folder: one line.
    nets = choose_embedder(student.config, style_encoder, magenta_weights)
    encoder = is_encoder(nets)
    trace, to_bytes, parity = (trace_encoder, encoder_bytes, encoder_parity) if encoder else \
        (trace_predictor, predictor_bytes, predictor_parity)
    pproto = trace(nets, opset)
    pdata = to_bytes(pproto, nets, opset, None)
    styles = _check_styles()
    worst = None
    if check:
        session = open_session(pdata, torch.get_num_threads(), spinning=False)[0]
        embeddings, worst = parity(nets, session, styles, tolerance, path)
        pdata = to_bytes(pproto, nets, opset, worst)
    else:
        with torch.inference_mode():
            embeddings = [nets.predictor(torch.from_numpy(style_square(a))).numpy() for _, a in styles]
    labels = [name for name, _ in styles] + ["mix of the paintings"]
    embeddings.append(np.mean(embeddings[:3], axis=0).astype(np.float32))
    conditions = [(n, e, STRENGTHS[i % len(STRENGTHS)]) for i, (n, e) in enumerate(zip(labels, embeddings))]
    what = "the style encoder" if encoder else "the style predictor"
    props.update(predictor=ppath.name, predictor_sha256=hashlib.sha256(pdata).hexdigest(),
                 style_load_side=str(STYLE_LOAD_SIDE), style_size=str(STYLE_SIZE),
                 embedding_size=str(EMBEDDING_SIZE), magenta_source=nets.teacher if encoder else nets.identity,
                 inputs=_inputs(EMBEDDING_SIZE, f"Magenta's style embedding from {what} {ppath.name}"))
    if encoder:
        props.update(style_encoder=nets.identity, style_min_side=str(STYLE_MIN_SIDE))
    return Conditioning("magenta-embedding", props, conditions, ppath, pdata, worst)


def report_fields(c: Optional[Conditioning]) -> dict[str, Any]:
    """The ``ExportReport`` fields of a conditional student (none for others)."""
    if c is None:
        return {}
    return {"condition": c.kind, "predictor_path": None if c.predictor_path is None else str(c.predictor_path),
            "predictor_bytes": len(c.predictor or b""), "embedding_max_abs_diff": c.embedding_max_abs_diff}
