"""atelier: neural style transfer (public API only)."""

__version__ = "0.1.0"

from .api import StylizeResult, list_methods, load_model, stylize  # noqa: E402
from .errors import AtelierError  # noqa: E402
from .progress import StepInfo  # noqa: E402

__all__ = ["stylize", "load_model", "list_methods", "StylizeResult", "StepInfo", "AtelierError", "__version__"]
