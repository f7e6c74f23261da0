"""The command line's pipes and printouts: the progress bar, a photo read from stdin, a picture or one JSON object
written to stdout, human lines moved to stderr when stdout carries data, and the tables of ``atelier info``.
``cli.py`` stays a list of thin subcommands; what they print is formatted here.

Contract: when stdout carries data (``-o -``: the picture's bytes; ``--json``: one JSON object and a newline), nothing
else goes there: ``data_on_stdout`` sends every ``print`` made meanwhile to stderr, and the data is written last, to the
stdout the command started with. Errors stay ``AtelierError`` one-liners (exit 2).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, TextIO

from .errors import AtelierError, OptionError
from .images import FORMATS as IMAGE_FORMATS, SAVE_FORMATS
from .progress import StepInfo

STDIO = "-"
FORMATS = tuple(IMAGE_FORMATS)  # png, jpeg, webp: what ``images.encode_image`` writes
# A file's format by its extension, from the one table ``images`` saves by.
_EXTENSION_FORMAT = {ext: pil.lower() for ext, pil in SAVE_FORMATS.items()}


@contextlib.contextmanager
def data_on_stdout(enabled: bool) -> Iterator[TextIO]:
    """Yields the stdout to write data to; while ``enabled``, every ``print`` to stdout goes to stderr instead."""
    real = sys.stdout
    if not enabled:
        yield real
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield real


class ProgressBar:
    """A tqdm bar per scale showing the loss parts and ETA, fed by the StepInfo callback."""

    def __init__(self, enabled: bool, out: Optional[Path], save_every: int):
        self.enabled, self.out, self.save_every = enabled, out, save_every
        self.bar = None
        self.scale = -1

    def __call__(self, info: StepInfo) -> None:
        if self.enabled:
            from tqdm import tqdm

            if info.scale != self.scale:
                self.close()
                self.scale = info.scale
                h, w = info.size
                self.bar = tqdm(total=info.total, desc=f"{info.engine} {info.scale + 1}/{info.scales} {w}x{h}",
                                unit="eval", file=sys.stderr, dynamic_ncols=True, leave=True)
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in info.parts.items()} | {"loss": f"{info.loss:.4g}"},
                                 refresh=False)
            self.bar.update(1)
        if self.save_every and self.out is not None and info.image is not None \
                and info.evaluations % self.save_every == 0:
            from .images import save_image

            path = self.out.with_name(f"{self.out.stem}.{info.evaluations:05d}{self.out.suffix}")
            save_image(info.image, path, {"intermediate": True, "evaluations": info.evaluations})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def check_stdio(content: str, output: str, fmt: Optional[str], as_json: bool, save_every: int,
                content_is_folder: bool) -> str:
    """Refuse combinations of ``-`` (stdin/stdout), ``--format`` and ``--json`` that cannot work, before any work;
    returns the output format (``png``, ``jpeg`` or ``webp``)."""
    to_stdout = output == STDIO
    if to_stdout and as_json:
        raise OptionError("json", "and -o - both write to stdout; choose one (write the picture to a file with -o, "
                                  "or drop --json)")
    if to_stdout and content_is_folder:
        raise OptionError("output", f"- writes one picture to stdout, but {content} is a folder; give a folder to "
                                    "write its pictures to")
    if to_stdout and save_every:
        raise OptionError("save_every", "writes files next to the output, and -o - has no file; drop it or give "
                                        "-o a file name")
    if to_stdout:
        return fmt or "png"
    own = "png" if content_is_folder else _EXTENSION_FORMAT.get(Path(output).suffix.lower())
    if fmt is not None and own is not None and fmt != own:
        what = "a folder's pictures are PNG" if content_is_folder else f"{output} is {own.upper()} by its extension"
        raise OptionError("format", f"{fmt} is for -o - (stdout); {what}")
    return own or "png"


def read_stdin_image(max_pixels: int) -> Any:
    """The photo on stdin, decoded (a ``PIL.Image``): one line if stdin is a terminal, empty or not an image."""
    from .images import open_image

    stream = sys.stdin
    if stream is None:
        raise AtelierError("stdin is closed: pipe a photo into atelier (atelier stylize - -o out.png < photo.jpg)")
    if stream.isatty():
        raise AtelierError("stdin is a terminal: pipe a photo into atelier (atelier stylize - -o out.png < photo.jpg)")
    data = getattr(stream, "buffer", stream).read()
    if not data:
        raise AtelierError("stdin is empty: pipe a photo into atelier (atelier stylize - -o out.png < photo.jpg)")
    return open_image(data, max_pixels, label="stdin")


def write_bytes(stream: TextIO, data: bytes) -> None:
    """Write ``data`` to ``stream`` (a text stream's binary buffer); a reader that went away is one line."""
    try:
        out = getattr(stream, "buffer", stream)
        out.write(data)
        out.flush()
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit: point stdout at /dev/null first.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
        raise AtelierError("stdout was closed before the whole picture was written (broken pipe)") from None


def write_json(stream: TextIO, obj: Any) -> None:
    """One JSON object and a newline on ``stream``."""
    write_bytes(stream, (json.dumps(obj, default=str) + "\n").encode("utf-8"))


# ------------------------------------------------------------------------------------------------- stylize


def done_line(result: Any, where: str, options: dict[str, Any]) -> str:
    """The human line after a picture is written."""
    md = result.metadata
    if result.evaluations == 0 and md.get("strength") == 0:
        return f"wrote {where} (strength 0: the photo, unchanged)"
    if "scale_sizes" not in md:  # one pass
        how = f"{options['tile']} px tiles" if options.get("tile") else "one pass"
        return f"wrote {where} ({result.method}, {how}, {result.seconds:.2f} s)"
    note = (f" (untrained random weights {md['weights']}: not a real style transfer)"
            if md.get("random_weights") else "")
    return f"wrote {where} ({result.evaluations} loss evaluations, {result.seconds:.1f} s){note}"


def picture_record(given: str, output: str, fmt: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """What ``--json`` says about one picture: ``input`` and ``output`` as given (``-`` for stdin/stdout), its
    ``format``, then its metadata (size [H, W], method, styles, seconds, device, options, evaluations, weights,
    strength and how it was applied, ...)."""
    return {"input": given, "output": output, "format": fmt,
            **{k: v for k, v in metadata.items() if k != "content"}}


def folder_record(folder: str, out_dir: str, done: Any) -> dict[str, Any]:
    """What ``--json`` says about a folder: one entry per picture written (``results``) and the files skipped."""
    return {"input": folder, "output": out_dir, "method": done.method, "written": len(done.written),
            "seconds": round(done.seconds, 3), "interrupted": done.interrupted,
            "results": [picture_record(r["input"], r["output"], "png", r["metadata"]) for r in done.records],
            "skipped": [{"input": name, "reason": reason} for name, reason in done.skipped]}


# --------------------------------------------------------------------------------------------------- bench


BENCH_KEYS = ("method", "size", "images", "weights", "median_s", "p10_s", "p90_s", "speedup_vs_baseline",
              "sec_per_eval", "evaluations", "peak_rss_mb", "params", "weights_file_bytes", "quality")


def bench_record(out: Path, records: list[dict]) -> dict[str, Any]:
    """What ``atelier bench --json`` says: where the results are, and the key numbers per method and size."""
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return {"out": str(out), "results": str(results_file), "report": str(out / "results.md"),
            "records": len(records), "command": results.get("command"), "judge": results.get("judge"),
            "summary": [{k: s.get(k) for k in BENCH_KEYS} for s in results.get("summary", [])]}


# ---------------------------------------------------------------------------------------------------- info


def _mb(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} MB"


def format_info(d: dict[str, Any]) -> str:
    """``about.collect()`` as a readable table."""
    lines = [f"atelier      {d['atelier']}",
             f"python       {d['python']} ({d.get('python_implementation', '')}) {d.get('executable', '')}".rstrip(),
             "platform     " + " ".join(str(v) for v in d["platform"].values())]
    t = d["torch"]
    extra = f" ({t['threads']} threads, CUDA {t['cuda'] or 'none'})" if "threads" in t else ""
    lines.append(f"torch        {t.get('version', t.get('error'))}{extra}")
    for name, version in d["packages"].items():
        lines.append(f"{name:<12} {version}")
    dev = d["devices"]
    if "error" in dev:
        lines.append(f"devices      {dev['error']}")
    else:
        cuda = dev["cuda"]
        names = f": {', '.join(map(str, cuda['names']))}" if cuda["names"] else ""
        lines += ["", f"devices      cpu ({dev['cpu']['cores']} cores); cuda: {cuda['count']} GPU(s){names}; "
                      f"mps: {'available' if dev['mps']['available'] else 'not available'}; default {dev['default']}"]
    lines += ["", "bundled models"]
    models = d["models"] if isinstance(d["models"], list) else [d["models"]]
    width = max([13] + [len(str(m.get("name", "?"))) + 1 for m in models])  # names line up, however long
    for m in models:
        if "error" in m:
            lines.append(f"  {m.get('name', '?'):<{width}} unreadable: {m['error']}")
            continue
        kind = m["kind"] + (f" ({m['style']})" if m.get("style") else "")
        params = f"{m['parameters']:,} params" if m.get("parameters") is not None else "? params"
        lines.append(f"  {m['name']:<{width}} {kind:<20} {params:<16} {_mb(m.get('size_bytes')):<9} "
                     f"licence: {m.get('licence') or 'not recorded'}")
        who = "source" if m["kind"] == "lite_encoder" else "teacher"
        lines.append(f"  {'':<{width}} {who}: {m.get('teacher') or 'not recorded'}"
                     + (f"; {m['folder']}" if m.get("folder") else ""))
    lines += ["", "weights of the feature nets"]
    for name, w in d["weights"].items():
        lines.append(f"  {name:<8} " + _weights_line(name, w))
    if d.get("cache_dir"):
        lines += ["", f"cache        {d['cache_dir']}"]
    return "\n".join(lines)


def _weights_line(name: str, w: dict[str, Any]) -> str:
    if "error" in w:
        return w["error"]
    state = "found" if w.get("found") else "NOT FOUND"
    if name == "vgg19":
        cached = ", ".join(f"{k} {'cached' if v else 'not cached'}" for k, v in w["cached"].items())
        hint = f"; {w['source']}" if w.get("source") else \
            "; `atelier weights fetch vgg19` (or --vgg-weights PATH) provides them"
        return f"{state} ({w['used_by']}); {cached}; {w['env']}{hint}"
    if name == "lite":
        return f"{state} ({w['used_by']}): {w['source']}" + (f"; {w['folder']}" if w.get("folder") else "")
    head = f"{w['package']} {w['version']}: {state} ({w['used_by']})"
    where = ", ".join(w.get("files", {}).values()) or w.get("file") or w.get("reason", "")
    head += f"; {where}" if where else ""
    if name == "magenta":
        head += f"; slim cache {'present' if w['cached'] else 'absent'}" + (f" at {w['cache']}" if w.get("cache")
                                                                           else "")
    return head
