"""``atelier sheet``: every named style of a style set (the bundled ones by default) painted on one photo, labelled,
in one picture. Each cell is one forward pass; the first cell is the photo itself."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from .api import ImageLike, list_styles, stylize
from .errors import AtelierError
from .images import tensor_to_pil, to_image_tensor


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def style_sheet(photo: ImageLike, model: Optional[str] = None, size: int = 384, strength: float = 1.0,
                columns: int = 0, styles: Sequence[str] = ()) -> tuple[Image.Image, list[dict[str, Any]]]:
    """The sheet and one record per cell (model, style, seconds). ``model``: a style set's name or folder (default:
    every bundled style set); ``styles``: only these names; ``columns``: 0 picks a near-square grid."""
    wanted = list_styles(model)
    if styles:
        missing = [s for s in styles if s not in {w["style"] for w in wanted}]
        if missing:
            raise AtelierError(f"no style {missing[0]!r} in {model or 'the bundled style sets'}; styles: "
                               f"{', '.join(w['style'] for w in wanted)}")
        wanted = [w for w in wanted if w["style"] in styles]
    if not wanted:
        raise AtelierError("no style set is installed: train one with `atelier train styles`, or give --model")
    content = to_image_tensor(photo, size, what="content")
    cells = [(tensor_to_pil(content), "photo")]
    records = []
    for w in wanted:
        result = stylize(content, w["style"], model=w["folder"], strength=strength, size=max(content.shape[-2:]))
        cells.append((result.image, w["style"]))
        records.append({"model": w["model"], "style": w["style"], "seconds": round(result.seconds, 4)})
    cols = columns or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / cols)
    cw, ch = cells[0][0].size
    pad, label = 6, max(16, round(ch * 0.07))
    font = _font(max(11, label - 4))
    sheet = Image.new("RGB", (pad + cols * (cw + pad), pad + rows * (ch + label + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, text) in enumerate(cells):
        x, y = pad + (i % cols) * (cw + pad), pad + (i // cols) * (ch + label + pad)
        sheet.paste(im, (x, y))
        draw.text((x + cw // 2, y + ch + label // 2), text, fill="black", font=font, anchor="mm")
    return sheet, records
