"""What the service can run, by each method's kind (``Method.kind``): students (bundled, then the folders under
``--models``) and one-pass methods on ``/v1/stylize``, engines (optimisation) on ``/v1/jobs``.

Contracts:

- Every registered method is served by its kind, through the Method contract alone: a method registered with kind
  ``one-pass`` is listed and served with the style images and options it declares (``Method.style``,
  ``Method.options``) without anything here naming it. A kind the service does not know is left out, with a
  warning in the log.
- Models are looked up by name in a listing: the bundled students (``api.list_methods``) and the student folders
  directly under ``--models DIR``. The user's text is only ever a key into that listing, never part of a path, so
  ``../etc`` or ``/tmp/x`` is just an unknown name (422).
- A folder is listed only if it works as far as can be told without loading it: its ``config.json`` reads as a
  student's and its weights file exists and its header reads. Others are left out, with one warning line each in
  the log (again only when the folder changes); asking for one by name is 422, never 500.
- Engines and one-pass methods that cannot run here are listed as unavailable with a reason in the service's
  words: what is missing, not the command-line advice or the server paths the library's full reason gives (that
  goes to the log).
- Each student is listed with its style, from its Method and its config alone (no weights are read): ``baked``,
  ``named`` (a style set: its style names and the file names of their paintings) or ``required`` (it paints the
  style image a request uploads), whether it reads ``strength``, and whether it can run here (the arbitrary
  student needs Magenta's style predictor; an unavailable one is listed with its reason and refused with 422).
- One Method object per registered engine and one-pass method is kept while it is registered: the engines' give
  their options; the one-pass methods' serve every request (``one_pass_method``), so a net a method loads on its
  first run is loaded once, not on every request. Re-registering the name under another factory replaces it.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any, Optional

from .. import api, registry
from ..errors import AtelierError
from ..folders import WEIGHTS_NAME, read_model_config
from ..methods import Method
from .jobs import ServiceError

log = logging.getLogger("atelier.serve")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # model folder names served from --models


def _stamp(path: Path) -> Optional[tuple]:
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def check_weights(path: Path) -> None:
    """Raise ``AtelierError`` unless ``path`` is a safetensors file whose header reads and names some tensors
    (the header only: no tensor is loaded)."""
    from safetensors import safe_open

    if not path.is_file():
        raise AtelierError(f"{WEIGHTS_NAME} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # SafetensorError, OSError, and whatever a damaged header gives
        raise AtelierError(f"{WEIGHTS_NAME} is unreadable ({type(e).__name__})") from None
    if not keys:
        raise AtelierError(f"{WEIGHTS_NAME} holds no tensors")


def client_reason(reason: str) -> str:
    """An unavailable method's reason for clients: what is missing (the first clause), and whose job it is."""
    first = re.split(r"[:;(]", reason or "", maxsplit=1)[0].strip() or "it is not installed"
    return f"{first[:120]}; the service's operator can install what it needs (the service's log says how)"


# What a config of the right kind but with fields of the wrong types raises on the way in (condition.styles a number,
# say), before the library's own checks (which run when the model is loaded) can name it.
_DAMAGE = (TypeError, ValueError, AttributeError, KeyError)


def _damage(error: Exception) -> str:
    return str(error) if isinstance(error, AtelierError) else \
        f"config.json is damaged ({type(error).__name__}: {str(error)[:80]})"


def style_facts(method: Method, config: dict[str, Any]) -> dict[str, Any]:
    """A student's style for the listing: ``style`` (``baked``, ``named`` or ``required``), ``strength`` (whether it
    reads it) and ``styles`` (a style set's names, each with its painting's file name or None; else empty)."""
    names = list(getattr(method, "style_names", None) or ())
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise AtelierError("config.json: condition.styles must name each style once; the model folder is damaged")
    paintings = config["condition"].get("style_images") if names else None
    if not (isinstance(paintings, list) and len(paintings) == len(names)):
        paintings = [None] * len(names)
    return {"style": method.style, "strength": "strength" in method.options,
            "styles": [{"name": n, "painting": Path(p).name if isinstance(p, str) and p else None}
                       for n, p in zip(names, paintings)]}


class Catalog:
    """Students (bundled, then ``models_dir``) and engines, listed again every ``ttl`` seconds so models copied
    into the folder appear without a restart."""

    def __init__(self, models_dir: Optional[str], ttl: float = 2.0):
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = -math.inf
        self._students: dict[str, dict[str, Any]] = {}
        self._engines: list[dict[str, Any]] = []
        self._one_pass: dict[str, dict[str, Any]] = {}
        self._methods: dict[str, tuple[Any, Method]] = {}  # one-pass name -> (its factory, its Method object)
        self._broken: dict[str, str] = {}       # folder name -> why it is not listed (for the log only)
        self._checked: dict[str, tuple] = {}    # folder name -> (stamps, entry or None, problem or None)
        self._warned: dict[str, str] = {}       # what the log last said about each name, so it says it once

    def _warn_once(self, name: str, message: str) -> None:
        if self._warned.get(name) != message:
            self._warned[name] = message
            log.warning("%s", message)

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return
            students: dict[str, dict[str, Any]] = {}
            engines = []
            one_pass: dict[str, dict[str, Any]] = {}
            for m in api.list_methods():
                reason = None
                if not m["available"]:
                    what = "engine" if m["kind"] == "optimisation" else f"{m['kind']} method"
                    self._warn_once(f"method:{m['name']}", f"{what} {m['name']} is unavailable: {m['reason']}")
                    reason = client_reason(m["reason"])
                if m["kind"] == "optimisation":
                    method = self._method_object(m["name"])
                    if method is None:
                        continue
                    engines.append({"name": m["name"], "description": m["description"], "available": m["available"],
                                    "reason": reason, "defaults": m.get("defaults", {}), "_method": method})
                elif m["kind"] == "student":
                    student = self._bundled_student(m["name"])
                    if student is not None:
                        students[m["name"]] = {"name": m["name"], "description": m["description"], "source": "bundled",
                                               "available": m["available"], "reason": reason, **student}
                elif m["kind"] == "one-pass":
                    method = self._method_object(m["name"])
                    if method is None:
                        continue
                    one_pass[m["name"]] = {"name": m["name"], "description": m["description"],
                                           "available": m["available"], "reason": reason, "style": m["style"],
                                           "defaults": m.get("defaults", {}), "_method": method}
                else:
                    self._warn_once(f"kind:{m['name']}", f"method {m['name']} is not served: the service does not "
                                    f"know its kind {m['kind']!r}")
            found, broken = self._folder_students()
            for name, folder in found.items():
                ok, why = folder["_method"].availability()  # what it needs may come or go with the folder unchanged
                if not ok:
                    self._warn_once(f"method:{name}", f"student {name} is unavailable: {why}")
                # The operator's folder wins over a bundled student of the same name.
                students[name] = {**folder, "available": ok, "reason": None if ok else client_reason(why)}
            served = set(one_pass) | {e["name"] for e in engines}
            self._methods = {k: v for k, v in self._methods.items() if k in served}  # unregistered: forgotten
            self._students, self._engines, self._one_pass = students, engines, one_pass
            self._broken, self._at = broken, time.monotonic()

    def _method_object(self, name: str) -> Optional[Method]:
        """The kept Method object of a registered engine or one-pass method (made again if its registration
        changed); None if it cannot be made (logged)."""
        try:
            factory = registry.get("method", name).factory()
        except AtelierError as e:  # unregistered since the listing, or its module does not import
            self._warn_once(f"method:{name}", f"method {name} is not served: {e}")
            return None
        kept = self._methods.get(name)
        if kept is None or kept[0] is not factory:
            kept = (factory, factory())
            self._methods[name] = kept
        return kept[1]

    def _bundled_student(self, name: str) -> Optional[dict[str, Any]]:
        """A bundled student's style facts, Method object and load key; None if it cannot be read (logged)."""
        try:
            method = api.find_method(model=name)
            facts = style_facts(method, read_model_config(method.folder, kind="student"))
        except (AtelierError, *_DAMAGE) as e:
            self._warn_once(f"method:{name}", f"student {name} is not served: {_damage(e)}")
            return None
        return {**facts, "_load": name, "_method": method}

    def _folder_students(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        root = self.models_dir
        if root is None or not root.is_dir():
            return {}, {}
        found, broken = {}, {}
        for entry in sorted(root.iterdir()):
            if not _NAME.fullmatch(entry.name) or not entry.is_dir():
                continue
            stamps = (_stamp(entry / "config.json"), _stamp(entry / WEIGHTS_NAME))
            cached = self._checked.get(entry.name)
            if cached is None or cached[0] != stamps:  # read again only when the folder changed
                cached = (stamps, *self._check_folder(entry))
                self._checked[entry.name] = cached
            _stamps, student, problem = cached
            if student is not None:
                found[entry.name] = student
                self._warned.pop(entry.name, None)
            else:
                broken[entry.name] = problem
                self._warn_once(entry.name, f"model folder {entry} is not served: {problem}")
        return found, broken

    @staticmethod
    def _check_folder(entry: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
        try:
            config = read_model_config(entry, kind="student")
            check_weights(entry / WEIGHTS_NAME)
            method = api.find_method(model=entry)
            facts = style_facts(method, config)
        except (AtelierError, *_DAMAGE) as e:
            return None, _damage(e)
        arch = config.get("architecture", {}).get("generator", "?")
        text = config.get("description") if isinstance(config.get("description"), str) else None
        if not text:
            text = f"feed-forward student ({arch} generator)" + \
                (f" in the style of {config['style']}" if config.get("style") else "")
        return {"name": entry.name, "description": " ".join(text.split()), "source": "models",
                **facts, "_load": entry, "_method": method}, None

    def students(self) -> list[dict[str, Any]]:
        """The students, each with its ``Method`` object under ``method`` (for its options and style)."""
        self._refresh()
        return [{**{k: v for k, v in s.items() if not k.startswith("_")}, "method": s["_method"]}
                for s in self._students.values()]

    def engines(self) -> list[dict[str, Any]]:
        """The engines, each with its ``Method`` object under ``method`` (for its options)."""
        self._refresh()
        return [{**{k: v for k, v in e.items() if not k.startswith("_")}, "method": e["_method"]}
                for e in self._engines]

    def one_pass(self) -> list[dict[str, Any]]:
        """The one-pass methods, each with its ``Method`` object under ``method`` (for its options and styles)."""
        self._refresh()
        return [{**{k: v for k, v in e.items() if not k.startswith("_")}, "method": e["_method"]}
                for e in self._one_pass.values()]

    def _kind_of(self, name: str) -> Optional[str]:
        if name in self._one_pass:
            return "one-pass"
        if any(e["name"] == name for e in self._engines):
            return "optimisation"
        if name in self._students or name in self._broken:
            return "student"
        return None

    def _listing(self) -> str:
        shown = list(self._one_pass) + list(self._students)
        return ", ".join(shown) or "none"

    def one_pass_method(self, name: str) -> Optional[Method]:
        """The Method object of the one-pass method ``name`` for ``POST /v1/stylize``; None when ``name`` is a
        student (the caller then serves it as one). Unknown names, engines and unavailable methods: 422."""
        self._refresh()
        entry = self._one_pass.get(name)
        if entry is not None:
            if not entry["available"]:
                raise ServiceError(422, f"method {name} cannot run on this service: {entry['reason']}")
            return entry["_method"]
        kind = self._kind_of(name)
        if kind == "student":
            return None
        if kind == "optimisation":
            raise ServiceError(422, f"{name} is an optimisation method: it runs as a job, so send it to POST "
                                    "/v1/jobs (with its style images), not to /v1/stylize")
        raise ServiceError(422, f"unknown method {name[:60]!r}; /v1/stylize serves: {self._listing()} "
                                "(GET /v1/models)")

    def _unusable(self, name: str) -> ServiceError:
        shown = ", ".join(self._students) or "none"
        return ServiceError(422, f"model {name[:60]!r} cannot be used: its folder on this service is not a working "
                                 f"student model (the service's log says why); available: {shown}")

    def student(self, name: str) -> dict[str, Any]:
        """A listed student's entry for ``POST /v1/stylize``: its ``Method`` object under ``method``, and under
        ``key`` what ``api.load_model`` gets (the bundled name, or the listed folder's own path). Unknown names,
        folders that do not work and students that cannot run here: 422."""
        self._refresh()
        entry = self._students.get(name)
        if entry is None:
            if name in self._broken:
                raise self._unusable(name)
            shown = ", ".join(self._students) or "none"
            kind = self._kind_of(name)
            hint = ""
            if kind == "one-pass":
                hint = f": {name} is a one-pass method that takes style images; send it as method={name} with them"
            elif kind == "optimisation":
                hint = f": {name} is an optimisation method; send it as method={name} to POST /v1/jobs"
            raise ServiceError(422, f"unknown model {name[:60]!r}{hint}; the students are: {shown} "
                                    "(GET /v1/models)")
        if not entry["available"]:
            raise ServiceError(422, f"model {name} cannot run on this service: {entry['reason']}")
        return {**{k: v for k, v in entry.items() if not k.startswith("_")}, "key": entry["_load"],
                "method": entry["_method"]}

    def load_failed(self, name: str, key: Any, error: AtelierError) -> ServiceError:
        """A listed model that did not load (damaged past what the listing checks, or since): log it, list it no
        more until its folder changes, and give the client its 422."""
        log.error("cannot load model %s: %s", name, error)
        with self._lock:
            if isinstance(key, Path):
                stamps = (_stamp(key / "config.json"), _stamp(key / WEIGHTS_NAME))
                self._checked[key.name] = (stamps, None, str(error))
                self._warned[key.name] = f"model folder {key} is not served: {error}"  # said just now
            self._at = -math.inf
        self._refresh()
        return self._unusable(name)

    def engine(self, name: str) -> dict[str, Any]:
        """An available engine's entry for ``POST /v1/jobs`` (its Method object under ``method``); else 422."""
        self._refresh()
        for e in self._engines:
            if e["name"] == name:
                if not e["available"]:
                    raise ServiceError(422, f"engine {name} cannot run on this service: {e['reason']}")
                return {**{k: v for k, v in e.items() if not k.startswith("_")}, "method": e["_method"]}
        if name in self._students:
            raise ServiceError(422, f"{name[:60]} is a student model: send it to POST /v1/stylize (one pass), "
                               "not to /v1/jobs")
        if name in self._one_pass:
            raise ServiceError(422, f"{name} is a one-pass method: send it as method={name} to POST /v1/stylize "
                                    "(its answer is the picture), not to /v1/jobs")
        raise ServiceError(422, f"unknown method {name[:60]!r}; engines: {', '.join(e['name'] for e in self._engines)}")
