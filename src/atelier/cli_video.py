"""``atelier video``: the command line over ``stylize_video`` (flags from its defaults and ``StylizeOptions``)."""

from __future__ import annotations

import argparse
import inspect

from .flags import add_option_flags, given, unit_number, whole_number
from .options import StylizeOptions
from .video.pipeline import DEFAULT_STABILITY, stylize_video
from .video.temporal import TEMPORAL

# The StylizeOptions fields a one-pass method reads on a video.
VIDEO_OPTIONS = ("method", "model", "tile", "device", "style_weights", "strength", "style_scale", "magenta_weights")
_DEFAULTS = {k: p.default for k, p in inspect.signature(stylize_video).parameters.items()
             if p.default is not inspect.Parameter.empty}


def add_parser(sub) -> None:
    v = sub.add_parser(
        "video", help="stylise a video with a one-pass method (a student, a bundled style set, magenta), "
                      "without flicker",
        description="Stylise the video IN into OUT (.mp4, .mkv, .mov, .webm, .avi) frame by frame with a one-pass "
                    "method, keeping its size, frame rate, timing and audio. Each frame is tied to the last by "
                    "optical flow (--temporal flow): the previous picture is warped to the new frame and blended in "
                    "where the flow is trusted, so strokes stay put instead of shimmering. Work is kept in OUT.parts "
                    "in chunks: after a kill, run the same command again to go on.")
    v.add_argument("input", metavar="IN", help="the video")
    v.add_argument("--output", "-o", required=True, metavar="OUT", help="the stylised video (.mp4, .mkv, .mov, "
                   ".webm, .avi)")
    v.add_argument("--style", "-s", action="append", default=[], metavar="STYLE",
                   help="a style name of a style set (paintings) or a style image (any-style, magenta); repeat to "
                        "blend")
    v.add_argument("--size", type=whole_number("--size", 1), default=None, metavar="N",
                   help="paint frames at N px on the long side (default: the video's own size); the output keeps "
                        "the video's size")
    v.add_argument("--temporal", choices=TEMPORAL, default=_DEFAULTS["temporal"],
                   help="flow: warp the previous picture along the optical flow and blend it where the flow is "
                        "trusted; average: a plain moving average (ghosts on motion); none: frame by frame "
                        f"(default: {_DEFAULTS['temporal']})")
    v.add_argument("--stability", type=unit_number("--stability", below_one=True), default=None, metavar="S",
                   help="how much of the previous picture each frame keeps, in [0, 1) (default: "
                        + ", ".join(f"{k} {s:g}" for k, s in DEFAULT_STABILITY.items() if s) + ")")
    v.add_argument("--flow", choices=("dis", "farneback"), default=_DEFAULTS["flow"],
                   help=f"optical flow (default: {_DEFAULTS['flow']})")
    v.add_argument("--chunk-frames", type=whole_number("--chunk-frames", 1), default=_DEFAULTS["chunk_frames"],
                   metavar="N", help=f"frames per resumable chunk (default: {_DEFAULTS['chunk_frames']})")
    v.add_argument("--keep-parts", action="store_true", help="keep OUT.parts (the lossless chunks) after writing")
    v.add_argument("--json", action="store_true", help="print one JSON record of the run on stdout (input, output, "
                   "frames, method, styles, temporal, stability, sizes, encoder, audio, seconds, frames per second); "
                   "other lines go to stderr")
    v.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    add_option_flags(v, StylizeOptions, "method options", only=VIDEO_OPTIONS)
    v.set_defaults(func=cmd_video)

    e = sub.add_parser("example-clip", help="write a short clip to try `atelier video` on (needs the [examples] "
                       "extra)", description="Write OUT: a virtual camera panning and zooming over scikit-image's "
                       "astronaut (a public-domain NASA photo) with a little sensor noise, 640x360, 25 fps.")
    e.add_argument("output", metavar="OUT", help="the clip (.mp4, .mkv, .mov, .webm, .avi)")
    e.add_argument("--frames", type=whole_number("--frames", 1), default=100, help="frames (default: 100, 4 s)")
    e.set_defaults(func=cmd_example_clip)


def cmd_video(args: argparse.Namespace) -> int:
    from . import cli_io

    options = given(args, StylizeOptions)
    method, model = options.pop("method", None), options.pop("model", None)
    if args.size:
        options["size"] = args.size
    with cli_io.data_on_stdout(args.json) as stdout:  # under --json the bars and the line go to stderr
        record = stylize_video(args.input, args.output, args.style or None, method, model=model,
                               temporal=args.temporal, stability=args.stability, flow=args.flow,
                               chunk_frames=args.chunk_frames, keep_parts=args.keep_parts,
                               progress=not args.quiet, **options)
        resumed = f", {record['resumed_chunks']} chunks resumed" if record["resumed_chunks"] else ""
        audio = f", audio {record['audio']}" if record["audio"] else ", no audio"
        print(f"wrote {record['output']} ({record['frames']} frames, {record['method']}, temporal "
              f"{record['temporal']} {record['stability']:g}, {record['paint_fps']} frames/s painting{audio}"
              f"{resumed}, {record['seconds']:.1f} s)")
        if args.json:
            cli_io.write_json(stdout, record)
    return 0


def cmd_example_clip(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import AtelierError
    from .files import atomic_path, check_writable_parent
    from .video.io import output_format
    from .video.pipeline import resize_frame
    from .video.synthetic import pan_zoom, write_video

    try:
        from skimage import data
    except ImportError:
        raise AtelierError('the example clip is made from scikit-image\'s astronaut; run: pip install '
                           '"atelier[examples]"') from None
    out = Path(args.output)
    muxer, encoder = output_format(out)
    check_writable_parent(out)
    photo = resize_frame(data.astronaut(), 840, 840)
    frames, _, _ = pan_zoom(photo, args.frames, (640, 360), pan=(1.5, 0.5), zoom=0.002, noise=2.0)
    with atomic_path(out) as tmp:
        write_video(tmp, frames, 25, codec=encoder, container=muxer)
    print(f"wrote {out} ({args.frames} frames, 640x360, 25 fps)")
    return 0
