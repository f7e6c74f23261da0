"""Peak memory of one forward and backward pass of a feature net through its default levels, alone (no optimiser).

    python benchmarks/encoder_memory.py [--lite-model DIR | --engine effnet|lite|gatys] [--size 1024] [--checkpoint]

Prints the rise of the process's high-water mark over its resident size before the pass, in MB. ``--checkpoint``
recomputes each block in the backward pass (``torch.utils.checkpoint``; EfficientNet-shaped nets only), to show how
much of the peak is activations kept for the backward pass.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no /proc/self/status")


def checkpointed(net, x, levels):
    from torch.utils.checkpoint import checkpoint

    from atelier.features.effnet import same_pad

    def block(blk, h):
        inp = h
        if blk.expand is not None:
            h = F.relu6(blk.expand(h))
        dw = F.relu6(blk.dw(same_pad(h, blk.spec.kernel, blk.spec.stride)))
        h = blk.project(dw)
        return (h + inp if blk.spec.residual else h), dw

    out = {}
    h = checkpoint(lambda t: F.relu6(net.stem(same_pad(net._normalize(t), 3, 2))), x, use_reentrant=False)
    out["stem"] = h
    for i, blk in enumerate(net.blocks):
        h, dw = checkpoint(block, blk, h, use_reentrant=False)
        if f"b{i}_dw" in levels:
            out[f"b{i}_dw"] = dw
        if len(out) == len(set(levels)):
            break
    return out


def main() -> int:
    from atelier import registry
    from atelier.options import StylizeOptions
    from atelier.losses import gram

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="lite", choices=("lite", "effnet", "gatys"))
    p.add_argument("--lite-model", default=None)
    p.add_argument("--size", type=int, default=1024, help="long side; the image is 4:3")
    p.add_argument("--checkpoint", action="store_true")
    args = p.parse_args()
    method = registry.create("method", args.engine)
    o = method.resolve(StylizeOptions(lite_model=args.lite_model, vgg_weights="random"))
    net = method.load_net(o, torch.device("cpu"))
    levels = list(dict.fromkeys([*o.style_layers, *o.content_layers]))
    x = torch.rand(1, 3, args.size * 3 // 4, args.size, requires_grad=True)
    before, t0 = rss_mb(), time.perf_counter()
    feats = checkpointed(net, x, levels) if args.checkpoint else net(x, levels)
    sum(gram(v).sum() for v in feats.values()).backward()
    print(f"{net.identity}: {args.size}x{args.size * 3 // 4}, levels {','.join(levels)}, "
          f"checkpoint={args.checkpoint}: peak +{rss_mb('VmHWM') - before:.0f} MB, {time.perf_counter() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
