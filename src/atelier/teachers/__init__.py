"""Teachers: models that stylise photographs so a feed-forward student can learn from (content, stylised) pairs.

| module | holds |
|---|---|
| ``base.py`` | the ``Teacher`` contract, its input/output helpers, ``make_teacher`` |
| ``optimize.py`` | ``OptimizeTeacher``: the ``gatys``, ``lite`` and ``effnet`` engines with fixed options |
| ``magenta.py`` | ``MagentaTeacher``: Magenta's arbitrary-style network, in torch (``[magenta]``) or TensorFlow (``[magenta-tf]``) |

``make_teacher(name, options, device, seed)`` looks ``name`` up in the registry (kind ``teacher``), whose entries
point at ``optimize.gatys_teacher``, ``optimize.lite_teacher``, ``optimize.effnet_teacher`` and
``magenta.magenta_teacher``. The choices of
``atelier prepare --teacher`` are ``atelier.options.TEACHERS``, held equal to the registry's names by a test.
"""

from .base import Teacher, make_teacher
from .magenta import MAGENTA_HANDLE, MAGENTA_MISSING, MagentaTeacher, call_magenta, load_magenta, magenta_teacher
from .optimize import OptimizeTeacher, effnet_teacher, gatys_teacher, lite_teacher

__all__ = ["Teacher", "OptimizeTeacher", "MagentaTeacher", "make_teacher", "load_magenta", "call_magenta",
           "gatys_teacher", "lite_teacher", "effnet_teacher", "magenta_teacher", "MAGENTA_HANDLE", "MAGENTA_MISSING"]
