"""The style encoder (``nets/style_encoder.py``) as ONNX, written beside an arbitrary-style student's export in the
place of Magenta's style predictor (``cond.py`` chooses which, as ``atelier stylize`` does: ``methods.style_encoding.
choose_embedder``).

The file has the predictor's interface, so ``runtime_magenta.StylePredictor`` runs either: input ``style`` float32
``[batch,3,height,width]`` RGB in [0,1] (``height, width >= atelier.min_side``; the runtime gives it the style
image's 256 px centre square), output ``embedding`` ``[batch,100]``. Metadata (``atelier.*``): ``export_format``,
``kind`` (``style-encoder``), ``name``, ``source`` (the encoder's identity), ``teacher`` (the Magenta predictor it
imitates), ``licence``, ``inputs``, ``outputs``, ``style_size``, ``embedding_size``, ``min_side``, ``version``,
``opset``, ``quantize`` (none), ``parity_max_abs_diff``.

Check (``encoder_parity``): the ONNX embeddings against torch's on the check styles' centre squares and on crops at
two other sizes (odd ones: the graph is traced with dynamic height and width), max abs difference within
``tolerance``, or the export is refused and nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .. import __version__
from ..errors import AtelierError
from ..runtime import METADATA_PREFIX, PLAIN_FORMAT
from ..runtime_magenta import EMBEDDING_NAME, EMBEDDING_SIZE, ENCODER_KIND, STYLE_NAME, STYLE_SIZE, style_square
from .checks import checked, smooth
from .common import onnx_modules

ODD_SIZES = ((97, 131), (64, 75))  # besides the 256 px squares: the graph's height and width are dynamic


def trace_encoder(encoder: Any, opset: int) -> Any:
    """The encoder traced to ONNX (batch, height and width dynamic)."""
    from .magenta import _trace

    dyn = torch.export.Dim.DYNAMIC
    style = torch.from_numpy(np.concatenate([smooth(STYLE_SIZE + 3, STYLE_SIZE - 5, 6),
                                             smooth(STYLE_SIZE + 3, STYLE_SIZE - 5, 7)]))
    return _trace(encoder.net, (style,), ({0: dyn, 2: dyn, 3: dyn},), [STYLE_NAME], [EMBEDDING_NAME],
                  {STYLE_NAME: ["batch", None, "height", "width"], EMBEDDING_NAME: ["batch", None]}, opset,
                  "style encoder")


def encoder_bytes(proto: Any, encoder: Any, opset: int, diff: Optional[float]) -> bytes:
    """The traced encoder with its metadata (``diff``: the measured parity, None before the checks), checked."""
    onnx, _ = onnx_modules()
    training = encoder.config.get("training") or {}
    props = {"export_format": str(PLAIN_FORMAT), "kind": ENCODER_KIND, "name": str(encoder.config.get("name", "")),
             "source": encoder.identity, "teacher": encoder.teacher,
             "licence": str(training.get("licence", "Apache-2.0")),
             "inputs": f"{STYLE_NAME}: float32 [batch,3,height,width] RGB in [0,1], height and width >= "
                       f"{encoder.min_side}; a style image's centre square resized to {STYLE_SIZE} (bicubic, "
                       "antialiased)",
             "outputs": f"{EMBEDDING_NAME}: float32 [batch,{EMBEDDING_SIZE}], the style embedding (Magenta's)",
             "style_size": str(STYLE_SIZE), "embedding_size": str(EMBEDDING_SIZE), "min_side": str(encoder.min_side),
             "version": __version__, "opset": str(opset), "quantize": "none", "pixels": "float32 NCHW RGB in [0,1]",
             "parity_max_abs_diff": "" if diff is None else f"{diff:.3g}"}
    onnx.helper.set_model_props(proto, {METADATA_PREFIX + k: v for k, v in props.items()})
    proto.doc_string = f"atelier style encoder ({encoder.identity}, distilled from {encoder.teacher}); run with " \
                       "atelier.runtime"
    checked(onnx, proto)
    return proto.SerializeToString()


def encoder_parity(encoder: Any, session: Any, styles: list[tuple[str, np.ndarray]], tolerance: float,
                   path: Path) -> tuple[list[np.ndarray], float]:
    """The torch encoder's embeddings ``[1,100]`` of ``styles``' centre squares at 256 and the worst |onnx - torch|
    over them and over crops at ``ODD_SIZES``; refuses above ``tolerance``."""
    embeddings, worst = [], 0.0
    for k, (name, a) in enumerate(styles):
        inputs = [style_square(a)] + ([np.ascontiguousarray(a[..., :h, :w]) for h, w in ODD_SIZES
                                       if a.shape[-2] >= h and a.shape[-1] >= w] if k == 0 else [])
        for i, x in enumerate(inputs):
            with torch.inference_mode():
                want = encoder.net(torch.from_numpy(x)).numpy()
            got = session.run([EMBEDDING_NAME], {STYLE_NAME: x})[0]
            worst = max(worst, float(np.abs(got - want).max()))
            if i == 0:
                embeddings.append(want)
    if not worst <= tolerance:  # NaN fails too
        raise AtelierError(f"refusing to write {path}: the ONNX style encoder differs from torch by {worst:.3g} "
                           f"(limit {tolerance:g}); the export is broken, please report it")
    return embeddings, worst


__all__ = ["trace_encoder", "encoder_bytes", "encoder_parity", "ODD_SIZES"]
