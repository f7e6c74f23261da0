"""atelier: neural style transfer (public API only).

Names are imported on first use (PEP 562), so ``import atelier.runtime`` and ``import atelier.errors`` work in an
environment without torch: the ONNX runtime path needs only numpy, Pillow and onnxruntime.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "stylize": "api", "load_model": "api", "list_methods": "api", "StylizeResult": "api",
    "StepInfo": "progress", "AtelierError": "errors", "stylize_video": "video.pipeline", "info": "api",
}

__all__ = ["stylize", "stylize_video", "load_model", "list_methods", "info", "StylizeResult", "StepInfo",
           "AtelierError", "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'atelier' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
