"""VGG19 as a feature net (conv1_1 .. relu5_1) and the resolution of its pretrained weights.

Contract: see ``base.py``. Two weight layouts are read, both identified by walking the conv weights in numeric key
order (never by hard-coded indices) and checking them against VGG19's channel plan:

* torchvision's ImageNet file (``features.N.weight/bias``): zero padding, ImageNet mean/std inside ``_normalize``;
* the normalised VGG19 of AdaIN-family projects (``vgg_normalised.pth``, keys ``0.weight``, ``2.weight`` ...): its
  first module is a 1x1 conv 3->3 that does the input conversion, reflection padding, ceil-mode pooling.

Where the weights come from, first found wins (``find_vgg19_weights`` says which without loading):

1. the ``weights`` argument (CLI ``--vgg-weights``): ``"random"`` or a path;
2. ``$ATELIER_VGG_WEIGHTS``: the same;
3. the slim cache ``cache_dir()/vgg19-conv5_1.safetensors``, then ``vgg19-normalised-conv5_1.safetensors`` (only
   ``atelier weights fetch vgg19 --from vgg_normalised.pth`` writes the latter, so a user who fetched it asked for it);
4. torch's hub cache ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth``;
5. a download, only when asked (``download=True`` or ``atelier weights fetch vgg19``).

The slim cache keeps only the 13 convs the net uses (about 52 MB instead of 548 MB), so later loads are fast; it
records the source's identity in its metadata so outputs stay labelled the same way. Only ``fetch_vgg19`` (``atelier
weights fetch vgg19 [--from FILE]``) writes it, and only from torchvision's ImageNet file (by hash) or a normalised
VGG19: loading never does, so a one-off ``--vgg-weights FILE`` never becomes the user's cached VGG19.

Identity (``net.identity``): ``vgg19:torchvision-imagenet(sha256:...)`` only for a file whose sha256 is the known
torchvision file's (``_is_imagenet``); ``vgg19:normalised(NAME,sha256:...)`` for the normalised layout;
``vgg19:file:NAME(sha256:...)`` for any other file; ``vgg19:random(seed=N)``.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import AtelierError
from ..files import cache_dir, sha256_file
from .base import FeatureNet

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
# The known torchvision file's sha256. Only its first 8 hex digits are recorded here: the ones torch.hub puts in the
# file name (``vgg19-<sha256 prefix>.pth``) and checks on download (check_hash). So a file counts as ImageNet when
# its sha256 starts with this prefix; with the full hash recorded, compare the whole digest instead.
IMAGENET_SHA256_PREFIX = "dcbb9e9d"
IMAGENET_LABEL = "vgg19:torchvision-imagenet(sha256:"  # + the file's first 12 hex digits + ")"
ENV_VAR = "ATELIER_VGG_WEIGHTS"
SLIM_FILENAME = "vgg19-conv5_1.safetensors"
SLIM_NORMALISED_FILENAME = "vgg19-normalised-conv5_1.safetensors"
POOLINGS = ("max", "avg")

Pair = tuple[torch.Tensor, torch.Tensor]  # (conv weight, conv bias)

# VGG19 ("E"): convs per block and their width. All 16 are checked when present; the net stops at conv5_1.
_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
_PLAN: list[tuple[int, int, int, int]] = []  # (block, index in block, in channels, out channels)
for _b, (_n, _width) in enumerate(_BLOCKS, start=1):
    for _i in range(1, _n + 1):
        _PLAN.append((_b, _i, _PLAN[-1][3] if _PLAN else 3, _width))
_USED = 13  # conv1_1 .. conv5_1

# Module indices of the convs in each published nn.Sequential, used only to name the slim copy's keys the way
# those projects do. torchvision: conv, relu per conv, + pool per block. AdaIN: 1x1 conv at 0, then pad, conv, relu
# per conv, + pool per block.
_TV_INDEX = [k * 2 + (b - 1) for k, (b, _, _, _) in enumerate(_PLAN)]
_NORM_INDEX = [2 + k * 3 + (b - 1) for k, (b, _, _, _) in enumerate(_PLAN)]
_KEY = re.compile(r"^(?:features\.)?(\d+)\.weight$")


def _check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise AtelierError(f"unknown pooling {pooling!r}; choose from: {', '.join(POOLINGS)}")


def _conv(weight: torch.Tensor, bias: torch.Tensor, padding: int) -> nn.Conv2d:
    """A conv that adopts the given tensors: built on the meta device, so no default init or copy is paid."""
    cout, cin, k, _ = weight.shape
    conv = nn.Conv2d(cin, cout, k, padding=padding, device="meta")
    conv.weight = nn.Parameter(weight.detach().float().contiguous())
    conv.bias = nn.Parameter(bias.detach().float().contiguous())
    return conv


class VGG19(FeatureNet):
    """VGG19 up to relu5_1. ``variant`` is "torchvision" or "normalised"; ``convs`` holds 13 (weight, bias), which
    the net adopts without copying (callers hand over freshly read tensors); ``load_vgg19`` is the usual way in."""

    default_content_layers = ("conv4_2",)
    default_style_layers = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

    def __init__(self, convs: Sequence[Pair], identity: str, variant: str = "torchvision", pooling: str = "max",
                 input_conv: Optional[Pair] = None):
        super().__init__(identity)
        _check_pooling(pooling)
        if variant not in ("torchvision", "normalised") or len(convs) != _USED:
            raise ValueError(f"VGG19 needs variant torchvision|normalised and {_USED} convs")
        if (variant == "normalised") != (input_conv is not None):
            raise ValueError("the normalised variant, and only it, needs its 1x1 input conv")
        self.variant, self.pooling = variant, pooling
        self.min_side = 1 if variant == "normalised" else 16  # ceil-mode pools run on any size; floor ones need 16
        reflect = variant == "normalised"
        pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
        for k, ((b, i, cin, cout), (w, bias)) in enumerate(zip(_PLAN, convs)):
            if tuple(w.shape) != (cout, cin, 3, 3) or tuple(bias.shape) != (cout,):
                raise ValueError(f"conv{b}_{i} needs weight ({cout}, {cin}, 3, 3) and bias ({cout},)")
            conv = _conv(w, bias, padding=0 if reflect else 1)
            # Reflection padding is what the normalised VGG was converted with (AdaIN); one module per conv name.
            self.layers[f"conv{b}_{i}"] = nn.Sequential(nn.ReflectionPad2d(1), conv) if reflect else conv
            # Not inplace: the engine keeps conv outputs, which an inplace ReLU would overwrite.
            self.layers[f"relu{b}_{i}"] = nn.ReLU(inplace=False)
            if i == _BLOCKS[b - 1][0] and k < _USED - 1:
                # ceil_mode matches the Torch7-born normalised net on odd sizes; torchvision floors.
                self.layers[f"pool{b}"] = pool(2, 2, ceil_mode=reflect)
        if input_conv is not None:
            self.input_conv = _conv(*input_conv, padding=0)
        else:
            self.use_imagenet_input()

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "normalised":
            # vgg_normalised.pth was made for Torch7 code: its leading 1x1 conv maps RGB in [0,1] to the caffe input
            # (BGR, 0-255, mean removed). The PyTorch ports (pytorch-AdaIN) feed ToTensor's RGB [0,1] straight into
            # it, so we do the same and apply no mean/std of our own.
            return self.input_conv(x)
        return (x - self.mean) / self.std


@dataclass
class _Weights:
    variant: str
    convs: list[Pair]  # conv1_1 .. conv5_1
    input_conv: Optional[Pair]
    identity: str


def slim_cache_path() -> Path:
    return cache_dir() / SLIM_FILENAME


def slim_normalised_cache_path() -> Path:
    return cache_dir() / SLIM_NORMALISED_FILENAME


def hub_checkpoint_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


def _missing_message() -> str:
    return (f"VGG19 weights not found: put {VGG19_FILENAME} (download it from {VGG19_URL}) in "
            f"{hub_checkpoint_path().parent}, or pass --vgg-weights PATH or set {ENV_VAR}=PATH, or run "
            f"`atelier weights fetch vgg19` where there is internet; offline, --vgg-weights random gives "
            f"untrained random weights (outputs labelled random)")


def _resolve(weights: Optional[str]) -> tuple[Optional[str], str]:
    """(source, reason): source is "random", a path (maybe missing, if the user named it), or None."""
    for value, origin in ((weights, "--vgg-weights"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if value:  # an empty environment variable counts as unset
            if value.strip().lower() == "random":
                return "random", f"{origin}=random: seeded random weights (untrained; outputs labelled random)"
            return str(Path(value).expanduser()), f"VGG19 weights from {origin}: {value}"
    for path, what in ((slim_cache_path(), "slim cache"), (slim_normalised_cache_path(), "slim normalised cache"),
                       (hub_checkpoint_path(), "torch hub cache")):
        if path.is_file():
            return str(path), f"VGG19 weights in the {what}: {path}"
    return None, _missing_message()


def find_vgg19_weights() -> tuple[Optional[str], str]:
    """(path or "random" or None, human reason) for the weights ``load_vgg19()`` would use; reads no weights."""
    source, reason = _resolve(None)
    if source not in (None, "random") and not Path(source).is_file():
        return None, f"{reason} is not a file"
    return source, reason


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:160]


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise AtelierError(f"VGG19 weights file not found: {path}")
    if path.is_dir():
        raise AtelierError(f"VGG19 weights path {path} is a directory; give a .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                obj = {k: f.get_tensor(k) for k in f.keys()}
        else:
            meta = {}
            obj = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
    except Exception as e:  # garbage bytes surface as many types: UnpicklingError, RuntimeError, SafetensorError...
        raise AtelierError(f"could not read VGG19 weights from {path} ({type(e).__name__}: {_first_line(e)}); "
                           f"is it a complete .pth or .safetensors file?") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):  # checkpoints often nest the state dict
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise AtelierError(f"{path} holds a {type(obj).__name__}, not a VGG19 state dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}, meta


def _parse(sd: dict[str, torch.Tensor], where: str) -> tuple[str, list[Pair], Optional[Pair]]:
    """Find the convs of either layout in numeric key order and check them against VGG19's plan."""
    tv = any(k.startswith("features.") for k in sd)  # torchvision; classifier.* keys are ignored
    found = sorted((int(m.group(1)), k) for k in sd if (m := _KEY.match(k)) and k.startswith("features.") == tv)
    if not found:
        raise AtelierError(f"{where} is not a VGG19 layout: expected keys like 'features.0.weight' (torchvision) "
                           f"or '0.weight' (vgg_normalised.pth)")
    keys = [k for _, k in found]

    def pair(wkey: str, shape: tuple[int, ...]) -> Pair:
        bkey = wkey[: -len("weight")] + "bias"
        w, b = sd[wkey], sd.get(bkey)
        for key, t, want in ((wkey, w, shape), (bkey, b, shape[:1])):
            got = "missing" if t is None else tuple(t.shape)
            if got != want:
                raise AtelierError(f"{where} has weights of the wrong shape for VGG19: {key} is {got}, expected "
                                   f"{want}; use torchvision's {VGG19_FILENAME} or vgg_normalised.pth")
            if not bool(torch.isfinite(t).all()):
                raise AtelierError(f"{where} has non-finite values (NaN or inf) in {key}; the file is damaged")
        return w.float(), b.float()

    input_conv = None
    if tuple(sd[keys[0]].shape) == (3, 3, 1, 1):  # the normalised net's input-conversion conv
        input_conv = pair(keys.pop(0), (3, 3, 1, 1))
    if len(keys) > len(_PLAN):
        raise AtelierError(f"{where} has weights of the wrong shape for VGG19: {keys[len(_PLAN)]} is an extra "
                           f"layer after conv5_4; use torchvision's {VGG19_FILENAME} or vgg_normalised.pth")
    convs = [pair(key, (cout, cin, 3, 3)) for key, (_, _, cin, cout) in zip(keys, _PLAN)]
    if len(convs) < _USED:
        raise AtelierError(f"{where} has only {len(convs)} VGG19 conv layers; need {_USED} (conv1_1 .. conv5_1)")
    return ("normalised" if input_conv else "torchvision"), convs[:_USED], input_conv


def _is_imagenet(digest: str) -> bool:
    """Whether a sha256 (a whole digest, or the 12-hex one a label carries) is the known torchvision ImageNet file's,
    as far as both are known (at least the 8 hex digits of the recorded prefix, see above)."""
    d, known = digest.lower().rstrip(")"), IMAGENET_SHA256_PREFIX
    n = min(len(d), len(known))
    return n >= 8 and d[:n] == known[:n]


def _file_identity(path: Path, variant: str) -> str:
    digest = sha256_file(path)
    if variant == "normalised":
        return f"vgg19:normalised({path.name},sha256:{digest[:12]})"
    if _is_imagenet(digest):
        return f"{IMAGENET_LABEL}{digest[:12]})"
    return f"vgg19:file:{path.name}(sha256:{digest[:12]})"


def _is_slim_cache(path: Path) -> bool:
    try:
        here = path.resolve()
        return here in (slim_cache_path().resolve(), slim_normalised_cache_path().resolve())
    except OSError:
        return False


def _cached_label(source: str, variant: str) -> bool:
    """Whether a slim cache's recorded label can stand: it names the same layout, and an ImageNet label carries the
    known file's hash (a cache written before the hash was checked may say ImageNet of any torchvision file). A
    random label claims nothing (benchmarks write seeded random weights in the cache's format)."""
    if variant == "normalised":
        return source.startswith("vgg19:normalised(")
    if source.startswith("vgg19:random("):
        return True
    return source.startswith(IMAGENET_LABEL) and _is_imagenet(source[len(IMAGENET_LABEL):])


def _read_weights(path: Path) -> _Weights:
    sd, meta = _read_file(path)
    variant, convs, input_conv = _parse(sd, str(path))
    source = meta.get("source", "")
    if _is_slim_cache(path) and _cached_label(source, variant):
        identity = source  # our slim copy keeps the label of the file it was made from; other files' labels are data
    else:
        identity = _file_identity(path, variant)
    return _Weights(variant, convs, input_conv, identity)


def _random_weights(seed: int) -> _Weights:
    # He init (normal, fan_out, relu) as torchvision initialises VGG, zero bias; a local generator keeps the global
    # RNG untouched and makes the weights depend on the seed alone.
    g = torch.Generator().manual_seed(int(seed))
    convs = [(torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (cout * 9)) ** 0.5, torch.zeros(cout))
             for _, _, cin, cout in _PLAN[:_USED]]
    return _Weights("torchvision", convs, None, f"vgg19:random(seed={int(seed)})")


def _download(progress: bool) -> _Weights:
    try:
        # check_hash compares the file's sha256 with the prefix in its name; weights_only: nothing is unpickled.
        sd = torch.hub.load_state_dict_from_url(VGG19_URL, map_location="cpu", progress=progress, check_hash=True,
                                                weights_only=True)
    except Exception as e:  # network, disk and hash-mismatch errors all mean "get the file another way"
        raise AtelierError(f"could not download VGG19 weights from {VGG19_URL} ({type(e).__name__}: "
                           f"{_first_line(e)}); save it by hand as {hub_checkpoint_path()} or pass "
                           f"--vgg-weights PATH") from e
    variant, convs, input_conv = _parse(sd, VGG19_URL)
    hub = hub_checkpoint_path()
    # check_hash verified a fresh download's sha256 prefix; a file already in torch's hub cache is not re-checked by
    # torch, so it is labelled by its own hash like any other file.
    identity = (_file_identity(hub, variant) if hub.is_file()
                else f"{IMAGENET_LABEL}{IMAGENET_SHA256_PREFIX})")
    return _Weights(variant, convs, input_conv, identity)


def _slim_source(path: Path) -> Optional[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("source")
    except Exception:  # a missing or damaged cache is simply rewritten
        return None


def _write_slim(w: _Weights, strict: bool = True) -> Path:
    """Write the 13 convs (+ input conv) as safetensors, atomically; a failure is one line. (``strict`` is kept for
    benchmarks/bench_engines.py's call; a failure always raises, since only an explicit fetch writes here.)"""
    normalised = w.variant == "normalised"
    path = slim_normalised_cache_path() if normalised else slim_cache_path()
    names = [f"{i}" for i in _NORM_INDEX] if normalised else [f"features.{i}" for i in _TV_INDEX]
    tensors = {"0.weight": w.input_conv[0], "0.bias": w.input_conv[1]} if w.input_conv else {}
    for name, (weight, bias) in zip(names, w.convs):
        tensors[f"{name}.weight"], tensors[f"{name}.bias"] = weight, bias
    # clone: tensors from one checkpoint may share storage, which safetensors refuses.
    tensors = {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in tensors.items()}
    tmp = None
    try:
        if _slim_source(path) == w.identity:
            return path  # already cached from the same source
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        save_file(tensors, tmp, metadata={"source": w.identity, "variant": w.variant})
        os.replace(tmp, path)  # a crash never leaves a half file under the real name
        tmp = None
    except Exception as e:
        raise AtelierError(f"could not write the VGG19 slim cache {path} ({type(e).__name__}: {_first_line(e)}); "
                           "set ATELIER_CACHE to a writable folder") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_vgg19(weights: Optional[str] = None, pooling: str = "max", seed: int = 0,
               device: Union[torch.device, str, None] = None, download: bool = False,
               progress: bool = True) -> VGG19:
    """Build a frozen VGG19 from the first weights found (see the module docstring for the order). Writes nothing:
    the slim cache is ``fetch_vgg19``'s (``atelier weights fetch vgg19``)."""
    _check_pooling(pooling)  # fail before reading hundreds of MB
    source, reason = _resolve(weights)
    if source == "random":
        w = _random_weights(seed)
    elif source is not None:
        w = _read_weights(Path(source))
    elif download:
        w = _download(progress)  # torch.hub keeps the file in its own cache, where the next load finds it
    else:
        raise AtelierError(reason)
    net = VGG19(w.convs, w.identity, w.variant, pooling, w.input_conv).freeze()
    return net.to(device) if device is not None else net


def fetch_vgg19(source: Optional[str] = None, progress: bool = True) -> Path:
    """``atelier weights fetch vgg19 [--from PATH]``: read a local file or download, write the slim cache.

    A torchvision-layout source goes to ``slim_cache_path()``, and only torchvision's ImageNet file (by its hash):
    the cache is what every later run calls ImageNet. A normalised-VGG source goes to
    ``slim_normalised_cache_path()`` (used when no torchvision copy is cached). Returns the written path.
    """
    if source is not None and source.strip().lower() == "random":
        raise AtelierError("random weights need no fetching; pass --vgg-weights random instead")
    if source is None:
        w, origin = _download(progress), hub_checkpoint_path()
    else:
        origin = Path(source).expanduser()
        w = _read_weights(origin)
    if w.variant == "torchvision" and not w.identity.startswith(IMAGENET_LABEL):
        raise AtelierError(f"{origin} is not torchvision's ImageNet VGG19 ({VGG19_FILENAME}, whose sha256 starts "
                           f"with {IMAGENET_SHA256_PREFIX}), and the cache is what every later run calls ImageNet, "
                           "so only that file is cached; pass this one with --vgg-weights PATH instead (outputs "
                           f"are then labelled vgg19:file:{origin.name}(...))")
    return _write_slim(w)
