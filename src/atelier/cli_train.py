"""``atelier train WHAT`` and ``atelier prepare``: one table of training commands, each an options dataclass and a
library entry point, and the command that makes their pairs.

Every command's flags are generated from its options (``cli._options_command``) and it runs the same way: the entry
point trains with a log and a progress bar (unless ``--quiet``) and returns the model folder, which the first process
reports (under torchrun the others return None). Adding a trainer is one row here.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (options class in atelier.options, "module:function" under atelier.train, help, description)
TRAINERS = {
    "lite": ("LiteTrainOptions", "lite:train_lite",
             "train a lite encoder and write its model folder",
             "Train a lite encoder on folders of images (distilled from VGG19 or as an autoencoder). Runs under "
             "`torchrun --nproc_per_node N` as it is."),
    "student": ("StudentTrainOptions", "student:train_student",
                "train a feed-forward student on a pairs folder (atelier prepare)",
                "Train a pix2pix-style generator to imitate a teacher's pictures in one pass. Runs under "
                "`torchrun --nproc_per_node N` as it is."),
    "styles": ("StyleSetTrainOptions", "styles:train_styles",
               "train one conditional student for several named styles (one pairs folder each)",
               "Train a tiny conditional generator on one pairs folder per style (atelier prepare); the model paints "
               "every style, blends and a strength in one pass. Runs under torchrun as it is."),
    "arbitrary": ("ArbitraryTrainOptions", "styles:train_arbitrary",
                  "train an arbitrary-style student from the magenta teacher",
                  "Train a tiny generator conditioned on Magenta's style embedding: the teacher labels a bank of "
                  "photo crops with augmented and mixed style embeddings, kept in the run folder; then any style "
                  "image paints in one pass."),
    "style-encoder": ("StyleEncoderTrainOptions", "style_encoder:train_style_encoder",
                      "distil Magenta's style predictor into the small style encoder",
                      "Train the style encoder the arbitrary-style students use by default: Magenta's style "
                      "predictor labels a bank of augmented crops of photographs and style images, kept in the run "
                      "folder; the encoder learns to give the same 100-d embedding in a few ms."),
}


def options_class(name: str) -> type:
    return getattr(importlib.import_module("atelier.options"), TRAINERS[name][0])


def cmd_train(args: argparse.Namespace) -> int:
    """Run the training command ``args.train_command`` (its entry point imported only now: torch loads here)."""
    from .cli import _log
    from .flags import given as given_options

    module, func = TRAINERS[args.train_command][1].split(":")
    train = getattr(importlib.import_module(f"atelier.train.{module}"), func)
    out = train(log=_log(args), progress=not args.quiet, **given_options(args, options_class(args.train_command)))
    if out is not None:  # only the first process of a torchrun job writes and reports
        print(f"wrote {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Make (content, stylised) pairs with a teacher (atelier.train.prepare); resumable, shardable."""
    from .cli import _log
    from .flags import given as given_options
    from .options import PrepareOptions
    from .train.prepare import prepare

    summary = prepare(log=_log(args), progress=not args.quiet, **given_options(args, PrepareOptions))
    skipped = ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()) or "none"
    print(f"wrote {summary['done']} new pair(s) to {summary['out']} ({summary['already']} already there; "
          f"skipped: {skipped})")
    return 0


def add_parsers(sub, options_command) -> None:
    """``atelier train`` and its subcommands, and ``atelier prepare``, on the subparsers ``sub`` (``options_command``:
    cli._options_command)."""
    t = sub.add_parser("train", help="train models (the lite encoder, students, the style encoder)")
    tsub = t.add_subparsers(dest="train_command", metavar="WHAT")
    tsub.required = True
    for name, (_, _, help_text, description) in TRAINERS.items():
        options_command(tsub, name, options_class(name), cmd_train, help_text, description)
    from .options import PrepareOptions

    options_command(sub, "prepare", PrepareOptions, cmd_prepare,
                    "make (photo, stylised) training pairs with a teacher",
                    "Stylise every photograph of a folder with a teacher (gatys, lite, effnet or magenta) and write "
                    "the pairs and a manifest; run it again to continue.")

