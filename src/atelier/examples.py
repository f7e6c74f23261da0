"""Bundled demo inputs, taken from a dependency rather than shipped: scikit-image's sample images.

Content: ``chelsea`` (a cat photograph); style: ``coffee`` (a cup of coffee: warm tones and round strokes;
scikit-image ships no paintings). Both are in the scikit-image wheel itself, so the demo needs no network. Install with ``pip install "atelier[examples]"``.
"""

from __future__ import annotations

from PIL import Image

from .errors import AtelierError


def example_images() -> tuple[Image.Image, Image.Image, tuple[str, str]]:
    try:
        from skimage import data
    except ImportError:
        raise AtelierError('the demo images come from scikit-image; run: pip install "atelier[examples]"') from None
    content = Image.fromarray(data.chelsea()).convert("RGB")
    style = Image.fromarray(data.coffee()).convert("RGB")
    return content, style, ("skimage.data.chelsea", "skimage.data.coffee")
