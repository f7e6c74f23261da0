"""Demo inputs: a photograph from a dependency and a few small public-domain paintings shipped in the package.

Content: scikit-image's ``chelsea`` (a cat photograph, in the scikit-image wheel: ``pip install "atelier[examples]"``).
Styles: ``atelier/weights/styles/`` holds The Starry Night (van Gogh, 1889), The Great Wave off Kanagawa (Hokusai,
c. 1831) and A Sunday on La Grande Jatte (Seurat, 1884-86), each under 200 KB, with their provenance lines in
``PROVENANCE.md`` beside them. The demo needs no network.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from .errors import AtelierError

STYLES_DIR = Path(__file__).resolve().parent / "weights" / "styles"
BUNDLED_STYLES = {"starry_night": "The Starry Night (Vincent van Gogh, 1889)",
                  "great_wave": "The Great Wave off Kanagawa (Katsushika Hokusai, c. 1831)",
                  "grande_jatte": "A Sunday on La Grande Jatte (Georges Seurat, 1884-86)"}


def bundled_style(name: str) -> Path:
    """The path of a bundled painting by name (``starry_night``, ``great_wave``, ``grande_jatte``)."""
    if name not in BUNDLED_STYLES:
        raise AtelierError(f"unknown bundled style {name!r}; choose from: {', '.join(BUNDLED_STYLES)}")
    path = STYLES_DIR / f"{name}.jpg"
    if not path.is_file():
        raise AtelierError(f"the bundled painting {path} is missing; reinstall atelier")
    return path


def example_images() -> tuple[Image.Image, Image.Image, tuple[str, str]]:
    try:
        from skimage import data
    except ImportError:
        raise AtelierError('the demo photo comes from scikit-image; run: pip install "atelier[examples]"') from None
    content = Image.fromarray(data.chelsea()).convert("RGB")
    with Image.open(bundled_style("starry_night")) as im:
        style = im.convert("RGB")
    return content, style, ("skimage.data.chelsea", "starry_night.jpg (van Gogh, The Starry Night)")
