import math

import pytest

from atelier.options import StylizeOptions
from atelier.errors import AtelierError


def test_defaults_validate_and_leave_per_method_fields_to_the_method():
    from atelier.options import METHOD_DEFAULTS

    o = StylizeOptions().validate()
    assert all(getattr(o, name) is None for name in METHOD_DEFAULTS)
    r = o.resolved({"content_layers": ("conv4_2",), "style_layers": ("conv1_1",), "iterations": 5,
                    "style_weight": 2.0, "tv_weight": 0.0, "scales": "none"})
    assert r.content_layers == ("conv4_2",) and r.iterations == 5 and r.scale_sizes() == [512]
    assert StylizeOptions(iterations=9).resolved(dict(r.__dict__)).iterations == 9  # given values win
    with pytest.raises(ValueError, match="lack"):
        o.resolved({"iterations": 5})


@pytest.mark.parametrize("bad", [
    {"style_weight": -1.0}, {"content_weight": math.nan}, {"tv_weight": math.inf}, {"size": 0},
    {"iterations": 0}, {"optimizer": "sgd"}, {"pooling": "min"}, {"preserve_color": "sepia"},
    {"style_weights": (1.0, -1.0)}, {"style_weights": (0.0, 0.0)}, {"style_scale": 0.0},
    {"scales": "512,256"}, {"scales": "abc"}, {"scales": "256,1024"}, {"content_layers": ()}, {"seed": -1},
    {"tile": -1}, {"strength": 1.5}, {"method": ""},
])
def test_bad_values_refused_with_one_line(bad):
    with pytest.raises(AtelierError) as e:
        StylizeOptions.from_kwargs(**{"size": 512, **bad})
    assert "\n" not in str(e.value)


def test_unknown_option_lists_valid():
    with pytest.raises(AtelierError, match="valid options"):
        StylizeOptions.from_kwargs(itrations=3)


@pytest.mark.parametrize("size, scales, expected", [
    (512, "none", [512]),
    (512, "auto", [133, 187, 261, 366, 512]),
    (128, "auto", [128]),
    (512, "256,512", [256, 512]),
    (512, "128,256", [128, 256, 512]),
])
def test_scale_plans(size, scales, expected):
    assert StylizeOptions(size=size, scales=scales).scale_sizes() == expected


def test_auto_scales_grow_by_about_1_4():
    sizes = StylizeOptions(size=2048, scales="auto").scale_sizes()
    assert 110 <= sizes[0] <= 150 and sizes[-1] == 2048
    ratios = [b / a for a, b in zip(sizes, sizes[1:])]
    assert all(1.3 < r < 1.5 for r in ratios)


def test_list_options_from_the_api_accept_comma_strings_and_lists():
    o = StylizeOptions.from_kwargs(style_layers="stem, b1_dw", content_layers=["b7_dw"], style_weights="0.7,0.3")
    assert o.style_layers == ("stem", "b1_dw") and o.content_layers == ("b7_dw",) and o.style_weights == (0.7, 0.3)
    with pytest.raises(AtelierError, match="comma-separated float"):
        StylizeOptions.from_kwargs(style_weights="a,b")
