"""Best loss reached with different L-BFGS history sizes (``--lbfgs-history``), same engine, pair and budget.

    python benchmarks/lbfgs_history.py lite 512 200
    python benchmarks/lbfgs_history.py gatys 256 100      # seeded random VGG19 where no weights are installed

Content ``tubingen.jpg``, style ``vangogh_the_starry_night.jpg`` from ../shared/data; one scale; prints the best loss
over all evaluations and over the first half, and the wall time, for histories 100 (PyTorch's default), 20 and 10.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def main() -> int:
    from atelier.options import StylizeOptions
    from atelier.features.lite import load_lite
    from atelier.features.vgg import find_vgg19_weights, load_vgg19
    from atelier.images import load_image
    from atelier.methods.optimize import optimize

    engine, size, evals = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    net = load_lite() if engine == "lite" else load_vgg19(find_vgg19_weights()[0] or "random")
    c = load_image(DATA / "content" / "tubingen.jpg", size=size)
    s = load_image(DATA / "styles" / "vangogh_the_starry_night.jpg", size=size)
    print(f"{engine} ({net.identity}), {size} px, {evals} evaluations")
    for history in (100, 20, 10):
        t = time.perf_counter()
        r = optimize(net, c, [s], StylizeOptions(size=size, iterations=evals, scales="none", lbfgs_history=history))
        losses = [h["loss"] for h in r.history]
        print(f"history {history:>3}: best loss {min(losses):.5f}, best in the first half "
              f"{min(losses[:evals // 2]):.5f}, {time.perf_counter() - t:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
