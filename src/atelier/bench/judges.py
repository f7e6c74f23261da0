"""The judges' levels and the results format (``BenchOptions`` itself lives in ``atelier.options``)."""

from __future__ import annotations

from ..metrics import CONTENT_LAYER, STYLE_LAYERS

# The levels each --judge measures at (the keys are BenchOptions' judge choices, in order; a test holds them equal). EfficientNet-Lite2: style from
# the stem and the depthwise output of the first block of stages 2, 3, 4 and 6 (1/2 .. 1/32 resolution, like VGG's
# conv1_1..conv5_1), content from the depthwise outputs that end stages 4 and 5 (both 1/16, like conv4_2). VGG19 (and
# its seeded random twin) keeps the textbook levels.
JUDGE_LEVELS: dict[str, dict[str, tuple[str, ...]]] = {
    "effnet-lite2": {"style": ("stem", "b1_dw", "b4_dw", "b7_dw", "b15_dw"), "content": ("b10_dw", "b14_dw")},
    "vgg19": {"style": STYLE_LAYERS, "content": (CONTENT_LAYER,)},
    "random": {"style": STYLE_LAYERS, "content": (CONTENT_LAYER,)},
}
FORMAT_VERSION = 2            # 2: quality is style_gram, style_meanstd, content_unit (1: style/content_distance)
