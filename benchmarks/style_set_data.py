"""Make (or finish) the teacher pairs that the bundled style sets are trained and judged on.

The photographs of ``../shared/data/content`` are split by the sha256 of their file name: the first 32 are held out
(never trained on), the rest train. Each split becomes a folder of symbolic links, and ``atelier prepare --teacher
magenta`` paints every photograph of each split in each of the set's paintings: ``ROOT/pairs/<style>`` and
``ROOT/held/<style>``. Run it again to finish an interrupted run (prepare continues where it stopped).

    python benchmarks/style_set_data.py --root /work/runs/set
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
# The ten styles of the bundled sets `paintings` and `paintings-steady` (style name -> painting file).
STYLES = {
    "composition-vii": "kandinsky_composition_vii.jpg",
    "grande-jatte": "seurat_a_sunday_on_la_grande_jatte.jpg",
    "great-wave": "hokusai_the_great_wave_off_kanagawa.jpg",
    "night-cafe": "vangogh_the_night_cafe.jpg",
    "shipwreck": "turner_the_shipwreck.jpg",
    "starry-night": "vangogh_the_starry_night.jpg",
    "the-kiss": "klimt_the_kiss.jpg",
    "the-scream": "munch_the_scream.jpg",
    "udnie": "picabia_udnie.jpg",
    "water-lilies": "monet_water_lilies_1919.jpg",
}
HELD_OUT = 32


def split_photos(content: Path, root: Path) -> tuple[Path, Path]:
    """``root/photos/train`` and ``root/photos/held``: links to the photographs, held out by sha256 of the name."""
    photos = sorted((p for p in content.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                    key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
    out = []
    for name, part in (("train", photos[HELD_OUT:]), ("held", photos[:HELD_OUT])):
        d = root / "photos" / name
        d.mkdir(parents=True, exist_ok=True)
        for p in part:
            link = d / p.name
            if not link.exists():
                link.symlink_to(p.resolve())
        out.append(d)
    return out[0], out[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--content", type=Path, default=DATA / "content")
    p.add_argument("--styles", default=",".join(STYLES), help="comma list of style names (default: all ten)")
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--held-only", action="store_true", help="only the held-out pairs (for judging)")
    a = p.parse_args()
    train, held = split_photos(a.content, a.root)
    for style in a.styles.split(","):
        painting = DATA / "styles" / STYLES[style]
        for photos, part in ((held, "held"), (train, "pairs")):
            if part == "pairs" and a.held_only:
                continue
            cmd = ["atelier", "prepare", "--teacher", "magenta", "--content", str(photos), "--style", str(painting),
                   "--size", str(a.size), "--out", str(a.root / part / style), "--quiet"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
