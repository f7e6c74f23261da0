"""The style encoder (``nets/style_encoder.py``, bundled in ``atelier/weights/style-encoder``) against Magenta's style
predictor, which it was distilled from, in one process and one run: milliseconds per style image and cosine
similarity of the embeddings on held-out paintings.

1. **Speed** at the size the predictor sees (a 256x256 square), ``--threads`` intra-op threads, batch 1, one call at
   a time. The rows are timed in turn (``--warmup`` rounds, then ``--runs`` rounds of one call each, median per row,
   each call after 20 ms idle so the previous call's spinning threads have gone to sleep), so the machine's slow
   spells fall on every row alike:
   - ``torch encoder`` / ``torch predictor``: the nets' forward passes in torch eager (inference mode);
   - ``embed encoder`` / ``embed predictor``: what the method does per style image (``methods.magenta.embed``
     without its cache: the 256 px centre square of a 512 px painting, then the net);
   - ``ort encoder`` / ``ort predictor``: the files ``atelier export`` writes beside an arbitrary-style student,
     in onnxruntime (when onnx, onnxscript and onnxruntime are installed).
2. **Cosine** between the encoder's and the predictor's embeddings on the held-out paintings (never trained on):
   each loaded at 512 px long side (as the arbitrary student loads style images), its centre square as the method
   sees it, plus ``--crops`` seeded random crops (40-100 % of the short side, flips, colour jitter:
   ``train.styles.augmented_crops``) at 256 px. Per painting: mean, min and the centre square; overall: mean, min.
   The encoder is the folder as shipped (fp16 weights widened to fp32).

3. **Pictures**: what the difference does to the arbitrary student's painting: ``any-style`` on ``--photos`` photos
   (scikit-image's samples, 384 px long side) in each held-out painting, once with the encoder's embedding and once
   with the predictor's; PSNR of the first against the second (8-bit pictures).

The load average before and after is recorded: numbers taken beside other work are inflated.

    python benchmarks/style_encoder.py --threads 2 --runs 25 --out benchmarks/results/style_encoder
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
HELD_OUT = ("cezanne_boy_in_a_red_vest.jpg", "hablik_utopian_buildings.jpg", "klee_clouds_over_bor.jpg",
            "monet_rouen_cathedral.jpg", "publicdomainpictures_zigzag_colorful_texture.jpg",
            "vangogh_wheat_field_with_cypresses.jpg")


def timed(rows: dict[str, Callable[[], Any]], warmup: int, runs: int) -> dict[str, dict[str, float]]:
    """Median and min ms per call of each row, the rows interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in rows}
    for r in range(warmup + runs):
        for name, fn in rows.items():
            time.sleep(0.02)
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1000)
    return {k: {"median_ms": round(statistics.median(v), 3), "min_ms": round(min(v), 3), "runs": len(v)}
            for k, v in times.items()}


def onnx_rows(encoder: Any, nets: Any, square: np.ndarray, threads: int) -> dict[str, Callable[[], Any]]:
    """onnxruntime sessions of the two exported files (empty if the onnx tools are missing)."""
    try:
        from atelier.export.magenta import predictor_bytes, trace_predictor
        from atelier.export.style_encoder import encoder_bytes, trace_encoder
        from atelier.runtime import open_session
        from atelier.runtime_magenta import EMBEDDING_NAME, STYLE_NAME

        enc = open_session(encoder_bytes(trace_encoder(encoder, 18), encoder, 18, None), threads)[0]
        pred = open_session(predictor_bytes(trace_predictor(nets, 18), nets, 18, None), threads)[0]
    except Exception as e:  # noqa: BLE001 - the torch rows still stand
        print(f"(no onnxruntime rows: {type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
        return {}
    feed = {STYLE_NAME: square}
    return {"ort encoder": lambda: enc.run([EMBEDDING_NAME], feed),
            "ort predictor": lambda: pred.run([EMBEDDING_NAME], feed)}


def cosines(encoder: Any, nets: Any, paintings: list[Path], crops: int, seed: int) -> dict[str, Any]:
    from atelier.images import load_image
    from atelier.methods.magenta import style_square
    from atelier.methods.style_encoding import STYLE_LOAD_SIDE
    from atelier.train.styles import augmented_crops

    g = torch.Generator().manual_seed(seed)
    per, every = {}, []
    for p in paintings:
        image = load_image(p, STYLE_LOAD_SIDE)
        x = torch.cat([style_square(image)] + ([augmented_crops(image, crops, 256, g)] if crops else []))
        with torch.inference_mode():
            cos = F.cosine_similarity(encoder.net(x), nets.predictor(x).reshape(len(x), -1), dim=1)
        every.append(cos)
        per[p.name] = {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4),
                       "centre": round(float(cos[0]), 4), "crops": len(cos)}
    allc = torch.cat(every)
    return {"mean": round(float(allc.mean()), 4), "min": round(float(allc.min()), 4), "crops": len(allc),
            "per_painting": per}


def pictures(encoder: Any, nets: Any, paintings: list[Path], photos: int) -> dict[str, Any]:
    """PSNR of any-style's picture with the encoder's embedding against the one with the predictor's."""
    from atelier.api import stylize
    from atelier.examples import example_images
    from atelier.metrics import psnr

    try:
        samples = [example_images()[0]]
        from skimage import data

        samples += [np.asarray(getattr(data, n)())[..., :3] for n in ("coffee", "astronaut")]
    except Exception as e:  # noqa: BLE001 - scikit-image is an extra
        print(f"(no picture rows: {type(e).__name__}: {str(e)[:120]})", file=sys.stderr)
        return {}
    rows = {}
    for p in paintings:
        values = []
        for photo in samples[:photos]:
            a = stylize(photo, p, model="any-style", size=384, style_encoder=str(encoder.folder))
            b = stylize(photo, p, model="any-style", size=384, style_encoder="magenta")
            values.append(float(psnr((a.tensor * 255).round() / 255, (b.tensor * 255).round() / 255)))
        rows[p.name] = round(sum(values) / len(values), 2)
    return {"photos": min(photos, len(samples)), "size": 384, "psnr_db": rows,
            "mean_psnr_db": round(sum(rows.values()) / len(rows), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder", default=None, help="a style encoder folder (default: the bundled one)")
    ap.add_argument("--styles", default=str(DATA / "styles"), help="folder holding the held-out paintings")
    ap.add_argument("--held-out", default=",".join(HELD_OUT), help="comma-separated file names of held-out paintings")
    ap.add_argument("--crops", type=int, default=4, help="random crops per held-out painting besides its centre")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--photos", type=int, default=3, help="photos for the picture rows (0: none)")
    ap.add_argument("--out", default=str(HERE / "results" / "style_encoder"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from atelier.images import load_image
    from atelier.methods.magenta import clear_embedding_cache, embed
    from atelier.nets.magenta_port import load_magenta
    from atelier.nets.style_encoder import load_style_encoder

    paintings = [Path(args.styles) / n for n in args.held_out.split(",") if n]
    missing = [str(p) for p in paintings if not p.is_file()]
    if missing:
        print(f"held-out paintings not found: {', '.join(missing)}; give --styles", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    encoder = load_style_encoder(args.encoder)
    nets = load_magenta(None, torch.device("cpu"))
    square_t = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(args.seed))
    painting = load_image(paintings[0], 512)

    def embed_with(e: Any) -> Callable[[], Any]:
        def run() -> Any:
            return embed(e, painting, cache=False)
        return run

    with torch.inference_mode():
        rows = {"torch encoder": lambda: encoder.net(square_t), "torch predictor": lambda: nets.predictor(square_t),
                "embed encoder": embed_with(encoder), "embed predictor": embed_with(nets)}
        rows.update(onnx_rows(encoder, nets, square_t.numpy(), args.threads))
        speed = timed(rows, args.warmup, args.runs)
    clear_embedding_cache()
    quality = cosines(encoder, nets, paintings, args.crops, args.seed)
    painted = pictures(encoder, nets, paintings, args.photos) if args.photos else {}
    load_after = os.getloadavg()
    record = {"encoder": encoder.identity, "teacher": nets.identity, "threads": args.threads, "runs": args.runs,
              "size": "256x256 (batch 1)", "cpu": _cpu(), "loadavg_before": [round(v, 2) for v in load_before],
              "loadavg_after": [round(v, 2) for v in load_after], "torch": torch.__version__, "ms": speed,
              "cosine_held_out": quality, "any_style_pictures": painted,
              "command": "python benchmarks/style_encoder.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=2)
    os.replace(f.name, out / "results.json")
    print(f"{encoder.identity} vs {nets.identity}; {args.threads} threads; load average {load_before[0]:.2f} -> "
          f"{load_after[0]:.2f}")
    print(f"{'row':<18} {'median ms':>10} {'min ms':>8}")
    for k, v in speed.items():
        print(f"{k:<18} {v['median_ms']:>10.2f} {v['min_ms']:>8.2f}")
    print(f"\ncosine to the predictor on {len(paintings)} held-out paintings ({quality['crops']} crops): mean "
          f"{quality['mean']}, min {quality['min']}")
    for k, v in quality["per_painting"].items():
        print(f"  {k:<52} mean {v['mean']:.4f}  min {v['min']:.4f}  centre {v['centre']:.4f}")
    if painted:
        print(f"\nany-style, encoder's embedding against the predictor's ({painted['photos']} photos, 384 px): PSNR "
              f"{painted['mean_psnr_db']} dB mean; " + ", ".join(f"{k.split('_')[0]} {v}" for k, v in
                                                           painted["psnr_db"].items()))
    print(f"wrote {out / 'results.json'}")
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
