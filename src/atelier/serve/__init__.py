"""The HTTP service (``atelier serve``): a FastAPI app with a web page, over ``atelier.api``.

Entry points: ``run_server(options)`` serves until interrupted (the CLI calls it); ``create_app(options)`` returns
the ASGI app; ``serve_in_thread(options)`` runs it in a background thread and yields its URL (tests, notebooks).
``options`` is an ``options.ServeOptions``. The endpoints, their status codes and the limits are described in
``atelier.serve.app``; the gate every request passes first (Host allowlist, anti-CSRF check on writes, body limit)
in ``atelier.serve.security``; the routes in ``routes`` and ``routes_jobs``; the models in ``catalog``; the job queue,
its tokens and its files on disk in ``atelier.serve.jobs``.

FastAPI, uvicorn and python-multipart come with the ``serve`` extra. Importing this package needs none of them;
calling an entry point without them raises ``AtelierError`` saying how to install them.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, Optional

from ..errors import AtelierError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..options import ServeOptions

__all__ = ["create_app", "run_server", "serve_in_thread"]


def _need_extras() -> None:
    # python-multipart is importable as python_multipart (0.0.13+) or, before that, as multipart.
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        missing.append("python-multipart")
    if missing:
        raise AtelierError(f"the service needs {', '.join(missing)}; install them with pip install 'atelier[serve]'")


def create_app(options: Optional["ServeOptions"] = None) -> "FastAPI":
    _need_extras()
    from .app import create_app as create

    return create(options)


def run_server(options: Optional["ServeOptions"] = None) -> None:
    _need_extras()
    from .app import run_server as run

    run(options)


def serve_in_thread(options: Optional["ServeOptions"] = None, **kwargs: Any) -> Any:
    _need_extras()
    from .app import serve_in_thread as serve

    return serve(options, **kwargs)
