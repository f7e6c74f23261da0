"""``ServeOptions``: where ``atelier serve`` listens, what it serves, and every limit it enforces."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Optional

from ..errors import OptionError
from .fields import check_choices, check_known, check_number, check_whole, coerce_lists, opt

SERVE_FORMATS = ("PNG", "JPEG", "WEBP")  # the upload formats the service can ever accept (Pillow's names)
# Names a browser uses only for this very machine: a page elsewhere cannot make a browser send them to the service
# (DNS rebinding needs a name the attacker controls), so they are always accepted.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"


def is_wildcard(host: str) -> bool:
    """Whether ``host`` is an address that listens on every interface (0.0.0.0, ::)."""
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        return False


def _host_name(text: str) -> str:
    """A host name as Host headers are compared: lower case, no IPv6 brackets, no trailing dot."""
    return text.strip().lower().strip("[]").rstrip(".")


@dataclass(frozen=True)
class ServeOptions:
    """``atelier serve``: where the HTTP service listens, what it serves, its worker threads and every limit it
    enforces. Each limit's status code is part of the service's contract (see ``atelier.serve``)."""

    host: str = opt("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface, "
                    "which needs --allowed-hosts)")
    allowed_hosts: tuple = opt((), "host names clients may use to reach the service (the Host header, port ignored); "
                               "requests naming any other host are refused with 400, against DNS rebinding. localhost, "
                               "127.0.0.1, ::1 and a --host that is not 0.0.0.0 or :: are always accepted; '*' accepts "
                               "any host (default: just those)", list_of=str, metavar="HOST,HOST")
    port: int = opt(8000, "TCP port to listen on (0: any free port)")
    models: Optional[str] = opt(None, "folder of student model folders served besides the bundled ones; each "
                                "subfolder's name is its model name (default: bundled students only)", metavar="DIR")
    results: Optional[str] = opt(None, "folder for job records and results, kept across restarts; one service per "
                                 "folder (default: serve-jobs under $ATELIER_CACHE or ~/.cache/atelier)",
                                 metavar="DIR")
    workers: int = opt(1, "worker threads in each of the two lanes: optimisation jobs, and one-pass student requests")
    torch_threads: int = opt(0, "threads torch uses for one computation (0: CPU cores divided by 2 x --workers, so "
                             "both lanes busy at once do not oversubscribe the cores)")
    max_queue: int = opt(16, "requests or jobs waiting for a worker, per lane, beyond which the service answers "
                         "503 with Retry-After")
    max_upload_bytes: int = opt(20_000_000, "largest request body in bytes, all uploaded images together; larger: 413")
    max_pixels: int = opt(25_000_000, "largest uploaded image in pixels (width x height); larger: 413")
    formats: tuple = opt(SERVE_FORMATS, "upload formats accepted (a subset of PNG,JPEG,WEBP, read from the bytes, "
                         "not the file name); others: 415", list_of=str, metavar="PNG,JPEG,WEBP")
    max_size: int = opt(1024, "largest output long side (size), and style long side (size x style_scale), a request "
                        "may ask for; larger: 422")
    max_iterations: int = opt(500, "largest iterations an optimisation job may ask for; larger: 422")
    max_styles: int = opt(4, "most style images one job may upload; more: 422")
    request_timeout: float = opt(60.0, "seconds a one-pass /v1/stylize request may take, waiting for a worker "
                                 "included; then it answers 504")
    job_timeout: float = opt(900.0, "seconds an optimisation job may run (waiting in the queue not counted); then "
                             "it stops and fails with status 504")
    keep_jobs: int = opt(500, "finished jobs kept in the results folder; the oldest beyond this are deleted")
    log_level: str = opt("info", "uvicorn's log level", choices=("critical", "error", "warning", "info", "debug"))

    def replace(self, **changes: Any) -> "ServeOptions":
        return replace(self, **changes)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ServeOptions":
        check_known(cls, kwargs, "serve option")
        for name in ("models", "results"):
            if kwargs.get(name) is not None:
                kwargs[name] = str(kwargs[name])
        kwargs = coerce_lists(cls, kwargs)
        if kwargs.get("formats") is not None:  # Pillow's format names are upper case; accept png,jpeg as well
            kwargs["formats"] = tuple(t.upper() for t in kwargs["formats"])
        return cls(**kwargs).validate()

    def validate(self) -> "ServeOptions":
        if not isinstance(self.host, str) or not self.host.strip():
            raise OptionError("host", f"must be an address such as 127.0.0.1, got {self.host!r}")
        check_whole(self, (("port", 0), ("workers", 1), ("torch_threads", 0), ("max_queue", 0),
                           ("max_upload_bytes", 1), ("max_pixels", 1), ("max_size", 16), ("max_iterations", 1),
                           ("max_styles", 1), ("keep_jobs", 1)))
        check_number("port", self.port, low=0, high=65535, whole=True)
        for name in ("request_timeout", "job_timeout"):
            check_number(name, getattr(self, name), low=0, strict_low=True, what="a number of seconds")
        if not self.formats or any(str(f).upper() not in SERVE_FORMATS for f in self.formats):
            raise OptionError("formats", f"must name some of {','.join(SERVE_FORMATS)}, got "
                               f"{','.join(map(str, self.formats)) or '(none)'}")
        self._check_hosts()
        check_choices(self)
        return self

    def _check_hosts(self) -> None:
        if not isinstance(self.allowed_hosts, (tuple, list)) or \
                not all(isinstance(h, str) for h in self.allowed_hosts):
            raise OptionError("allowed_hosts", f"must be a list of host names, got {self.allowed_hosts!r}")
        for h in self.allowed_hosts:
            name = _host_name(h)
            if h.strip() == ANY_HOST:
                continue
            # A bare name or address: no scheme, path, user or port (the port is never compared).
            bad = not name or any(c in name for c in "/@?#*\\ \t") or (":" in name and not _is_ipv6(name))
            if bad:
                raise OptionError("allowed_hosts", f"takes host names or addresses without scheme, port or path "
                                  f"(for example photos.example,192.168.1.20, or '*'), got {h[:80]!r}")
        if is_wildcard(self.host) and not self.allowed_hosts:
            raise OptionError("allowed_hosts", f"must name the host names clients use to reach this service, since "
                              f"it listens on every interface ({self.host}); for example photos.example,192.168.1.20, "
                              f"or '*' to accept any Host (no protection against DNS rebinding)")

    def accepted_hosts(self) -> Optional[frozenset]:
        """The host names the service answers to (compared lower case, without brackets or port); None: any."""
        names = {_host_name(h) for h in self.allowed_hosts}
        if ANY_HOST in names:
            return None
        names.update(LOOPBACK_HOSTS)
        if not is_wildcard(self.host):
            names.add(_host_name(self.host))
        return frozenset(names)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False
