"""The pictures of a results folder: a contact sheet per size and the convergence plot (matplotlib's Agg canvas)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw, ImageFont

from ..errors import AtelierError
from ..files import atomic_path
from ..images import open_image
from ..options.bench import BASELINE


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _fit(draw, text: str, width: int, font) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(results: dict, out: Path, size: int, cell: int = 160) -> Optional[Path]:
    """Rows = contents; columns = content, then style x method; style thumbnails and labels on top."""
    recs = {(r["method"], r["content_sha256"], r["style_sha256"]): r
            for r in results["records"] if r["size"] == size and r["method"] != BASELINE}
    methods = list(dict.fromkeys(r[0] for r in recs))
    if not methods:
        return None
    pairs = results["pairs"]
    contents = list(dict.fromkeys((p["content_sha256"], p["content"]) for p in pairs))
    styles = list(dict.fromkeys((p["style_sha256"], p["style"]) for p in pairs))
    pad, lab = 6, 18
    font, small = _font(13), _font(11)
    cols = 1 + len(styles) * len(methods)
    title_h = 2 * lab + pad
    head_h = cell + 2 * lab + pad
    width = pad + cols * (cell + pad)
    height = title_h + head_h + len(contents) * (cell + lab + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)

    def thumb(path: Path) -> Optional[Image.Image]:
        try:
            im = open_image(path)
        except AtelierError:
            return None
        scale = cell / max(im.size)
        # Shrink smoothly; enlarge tiny outputs with nearest neighbour so their real pixels stay visible.
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
        return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)

    def paste(im: Optional[Image.Image], x: int, y: int) -> None:
        if im is None:
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(225, 225, 225))
            draw.text((x + cell // 2, y + cell // 2), "missing", fill="gray", font=small, anchor="mm")
        else:
            sheet.paste(im, (x + (cell - im.width) // 2, y + (cell - im.height) // 2))

    weights = recs[next(iter(recs))]["weights"]
    draw.text((pad, 2), _fit(draw, f"atelier bench, {size} px", width - 2 * pad, font), fill="black", font=font)
    draw.text((pad, lab + 2), _fit(draw, f"judge {results['judge']}; weights {weights}", width - 2 * pad, small),
              fill="gray", font=small)
    y0 = title_h
    draw.text((pad + cell // 2, y0 + cell // 2), "content \\ style", fill="gray", font=font, anchor="mm")
    group_w = len(methods) * (cell + pad) - pad
    for j, (_, spath) in enumerate(styles):
        x = pad + (1 + j * len(methods)) * (cell + pad)
        paste(thumb(Path(spath)), x + (group_w - cell) // 2, y0)
        draw.text((x + group_w // 2, y0 + cell + 2), _fit(draw, Path(spath).stem, group_w, font), fill="black",
                  font=font, anchor="ma")
        for k, m in enumerate(methods):
            cx = x + k * (cell + pad)
            draw.text((cx + cell // 2, y0 + cell + lab + 2), _fit(draw, m, cell, small), fill=(40, 40, 160),
                      font=small, anchor="ma")
    for i, (csha, cpath) in enumerate(contents):
        y = title_h + head_h + i * (cell + lab + pad)
        paste(thumb(Path(cpath)), pad, y)
        draw.text((pad + cell // 2, y + cell + 2), _fit(draw, Path(cpath).stem, cell, small), fill="black",
                  font=small, anchor="ma")
        for j, (ssha, _) in enumerate(styles):
            for k, m in enumerate(methods):
                x = pad + (1 + j * len(methods) + k) * (cell + pad)
                r = recs.get((m, csha, ssha))
                paste(thumb(out / r["output"]) if r else None, x, y)
    path = out / f"contact_sheet_{size}.png"
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return path


def convergence_plot(results: dict, path: Path) -> Optional[Path]:
    """Objective against evaluations and against seconds, first pair, every method and size (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    if not results["pairs"]:
        return None
    first = (results["pairs"][0]["content_sha256"], results["pairs"][0]["style_sha256"])
    recs = [r for r in results["records"] if (r["content_sha256"], r["style_sha256"]) == first and r.get("trace")]
    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_e, ax_t = fig.subplots(1, 2)
    methods = list(dict.fromkeys(r["method"] for r in recs))
    sizes = sorted({r["size"] for r in recs})
    styles = ["-", "--", ":", "-."]
    for r in recs:
        colour = "black" if r["method"] == BASELINE else f"C{methods.index(r['method']) % 10}"
        ls = styles[sizes.index(r["size"]) % len(styles)]
        label = f"{r['method']} {r['size']} px"
        tr = r["trace"]
        ax_e.plot(tr["evaluations"], tr["loss"], ls, color=colour, label=label, lw=1.4)
        ax_t.plot(tr["seconds"], tr["loss"], ls, color=colour, label=label, lw=1.4)
    for ax, xl in ((ax_e, "loss evaluations (all scales)"), (ax_t, "seconds")):
        ax.set_yscale("log")
        # Plain numbers on the log axis, with 2, 3 and 5 times each power of ten labelled too.
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(xl)
        ax.set_ylabel("objective (weighted content + style + tv)")
        ax.grid(True, which="both", alpha=0.3)
    if recs:
        ax_t.legend(fontsize=8)
    fig.suptitle(f"Convergence on {Path(results['pairs'][0]['content']).name} + "
                 f"{Path(results['pairs'][0]['style']).name} (coarse scales of multi-scale runs are smaller images)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
