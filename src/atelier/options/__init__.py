"""Every options dataclass, and the one set of helpers that declares and checks them (``fields.py``).

| module | dataclass | command |
|---|---|---|
| ``stylize.py`` | ``StylizeOptions`` | ``atelier stylize``, ``atelier.stylize(**options)``, the service's form |
| ``train.py`` | ``TrainOptions``, ``LiteTrainOptions``, ``StudentTrainOptions``, ``StyleSetTrainOptions``, ``ArbitraryTrainOptions``, ``StyleEncoderTrainOptions`` | ``atelier train lite|student|styles|arbitrary|style-encoder`` |
| ``prepare.py`` | ``PrepareOptions`` | ``atelier prepare`` |
| ``bench.py`` | ``BenchOptions`` | ``atelier bench`` |
| ``serve.py`` | ``ServeOptions`` | ``atelier serve`` |

The CLI builds its flags from the fields (name, type, default, help, choices); every check raises ``OptionError``
naming the field, which each front-end renders in its own words. This package is the ground floor: it imports
nothing of atelier but ``errors``.
"""

from .bench import BenchOptions
from .fields import (DEFAULT_MAX_PIXELS, DEVICES, check_choices, check_known, check_number, check_whole, coerce_lists,
                     opt)
from .prepare import MIN_SIDE, TEACHERS, PrepareOptions, parse_shard, parse_teacher_options
from .serve import SERVE_FORMATS, ServeOptions
from .stylize import DEFAULT_METHOD, METHOD_DEFAULTS, StylizeOptions
from .train import (GENERATORS, MAX_CONVS, MAX_WIDTH, STUDENT_LEARNING_RATES, ArbitraryTrainOptions, LiteTrainOptions,
                    StudentTrainOptions, StyleEncoderTrainOptions, StyleSetTrainOptions, TrainOptions)

__all__ = ["BenchOptions", "DEFAULT_MAX_PIXELS", "DEVICES", "check_choices", "check_known", "check_number",
           "check_whole", "coerce_lists", "opt", "MIN_SIDE", "TEACHERS", "PrepareOptions", "parse_shard",
           "parse_teacher_options", "SERVE_FORMATS", "ServeOptions", "DEFAULT_METHOD", "METHOD_DEFAULTS",
           "StylizeOptions", "GENERATORS", "MAX_CONVS", "MAX_WIDTH", "STUDENT_LEARNING_RATES", "LiteTrainOptions",
           "StudentTrainOptions", "TrainOptions", "StyleSetTrainOptions", "ArbitraryTrainOptions",
           "StyleEncoderTrainOptions"]
