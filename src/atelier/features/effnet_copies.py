"""Truncated, int8 and narrowed copies of EfficientNet-Lite: what the bundled lite encoder is made of (``atelier
weights make-lite``) and what ``atelier train lite --teacher-weights effnet`` starts from."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..errors import AtelierError
from .effnet import EfficientNetLite, Pair, VARIANTS, plan

# The bundled lite encoder is EfficientNet-Lite0 cut after the last block its default levels use, BatchNorm folded,
# conv weights stored as int8 with one fp32 scale per output channel (symmetric, amax / 127), biases in fp32. The
# net computes in fp32 from the dequantised weights: int8 is only how the file stays under 1.5 MB.
QUANT_SUFFIX, SCALE_SUFFIX = ".q", ".scale"


def quantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Conv weights (4-d) -> ``key.q`` int8 + ``key.scale`` fp32 per output channel; everything else as is."""
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if t.dim() == 4:
            scale = t.detach().abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
            out[key + QUANT_SUFFIX] = torch.round(t / scale.view(-1, 1, 1, 1)).clamp(-127, 127).to(torch.int8)
            out[key + SCALE_SUFFIX] = scale.float()
        else:
            out[key] = t.detach().float()
    return out


def dequantize_int8(state: dict[str, torch.Tensor], where: str = "weights") -> dict[str, torch.Tensor]:
    """The inverse of ``quantize_int8`` (fp32 tensors under the original keys)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if key.endswith(QUANT_SUFFIX):
            base = key[: -len(QUANT_SUFFIX)]
            scale = state.get(base + SCALE_SUFFIX)
            if t.dtype != torch.int8 or scale is None or tuple(scale.shape) != (t.shape[0],):
                raise AtelierError(f"{where}: {key} needs int8 values and a {base + SCALE_SUFFIX} of {t.shape[0]} "
                                   "scales; the model folder is damaged")
            out[base] = t.float() * scale.float().view(-1, 1, 1, 1)
        else:
            out[key] = t.float()
    return out


def folded_state(net: EfficientNetLite) -> dict[str, torch.Tensor]:
    """The folded net's own weights (``stem.weight``, ``blocks.N.expand|dw|project.weight/bias``)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def from_folded(state: dict[str, torch.Tensor], variant: str, blocks: int, identity: str,
                where: str = "weights", expand: Optional[int] = None) -> EfficientNetLite:
    """Rebuild the first ``blocks`` blocks of a variant (with expansion ratio ``expand``, default the variant's) from
    ``folded_state`` tensors, checking every shape."""
    if variant not in VARIANTS:
        raise AtelierError(f"{where}: unknown EfficientNet variant {variant!r}; choose from: {', '.join(VARIANTS)}")
    if expand is not None and (isinstance(expand, bool) or not isinstance(expand, int) or not 1 <= expand <= 6):
        raise AtelierError(f"{where}: expand must be a whole number in 1..6, got {expand!r}")
    stem_width, specs = plan(variant, expand)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 1 <= blocks <= len(specs):
        raise AtelierError(f"{where}: blocks must be a whole number in 1..{len(specs)}, got {blocks!r}")
    specs = specs[:blocks]
    want: dict[str, tuple[int, ...]] = {"stem.weight": (stem_width, 3, 3, 3), "stem.bias": (stem_width,)}
    for i, s in enumerate(specs):
        if s.expand:
            want[f"blocks.{i}.expand.weight"], want[f"blocks.{i}.expand.bias"] = (s.hidden, s.cin, 1, 1), (s.hidden,)
        want[f"blocks.{i}.dw.weight"], want[f"blocks.{i}.dw.bias"] = (s.hidden, 1, s.kernel, s.kernel), (s.hidden,)
        want[f"blocks.{i}.project.weight"], want[f"blocks.{i}.project.bias"] = (s.cout, s.hidden, 1, 1), (s.cout,)
    extra = sorted(set(state) - set(want))
    for key, shape in want.items():
        got = tuple(state[key].shape) if key in state else "missing"
        if got != shape:
            raise AtelierError(f"{where} does not fit EfficientNet-{variant.capitalize()} ({blocks} blocks): {key} is "
                               f"{got}, expected {shape}")
        if not bool(torch.isfinite(state[key]).all()):
            raise AtelierError(f"{where} has non-finite values in {key}; the model is damaged")
    if extra:
        raise AtelierError(f"{where} does not fit EfficientNet-{variant.capitalize()} ({blocks} blocks): unexpected "
                           f"weight {extra[0]}")

    def pair(name: str) -> Pair:
        return state[f"{name}.weight"], state[f"{name}.bias"]

    built = [(s, pair(f"blocks.{i}.expand") if s.expand else None, pair(f"blocks.{i}.dw"), pair(f"blocks.{i}.project"))
             for i, s in enumerate(specs)]
    return EfficientNetLite(pair("stem"), built, identity, False, variant)


def blocks_for(layers: Sequence[str]) -> int:
    """How many blocks a net needs to reach every level in ``layers`` (``stem`` needs none; ``bN_*`` needs N+1)."""
    need = 0
    for name in layers:
        if name != "stem":
            need = max(need, int(name[1:].split("_")[0]) + 1)
    return need


def narrow(state: dict[str, torch.Tensor], variant: str, blocks: int, expand: int) -> dict[str, torch.Tensor]:
    """``folded_state`` tensors of a net cut to ``blocks`` blocks with expansion ratio ``expand``: in each block
    that expands, keep the hidden channels that feed the block's output most (largest L1 norm of their column of
    the projection). The start of ``atelier train lite --teacher-weights effnet``: structured pruning, then
    distillation recovers what the dropped channels carried."""
    _, full = plan(variant)
    _, small = plan(variant, expand)
    out = {k: v.clone() for k, v in state.items() if not k.startswith("blocks.")}
    for i, (big, spec) in enumerate(zip(full[:blocks], small[:blocks])):
        p = f"blocks.{i}"
        keep = torch.arange(big.hidden)
        if spec.expand and spec.hidden < big.hidden:
            importance = state[f"{p}.project.weight"].abs().sum(dim=(0, 2, 3))
            keep = importance.topk(spec.hidden).indices.sort().values
        if spec.expand:
            out[f"{p}.expand.weight"] = state[f"{p}.expand.weight"][keep].clone()
            out[f"{p}.expand.bias"] = state[f"{p}.expand.bias"][keep].clone()
        out[f"{p}.dw.weight"] = state[f"{p}.dw.weight"][keep].clone()
        out[f"{p}.dw.bias"] = state[f"{p}.dw.bias"][keep].clone()
        out[f"{p}.project.weight"] = state[f"{p}.project.weight"][:, keep].clone()
        out[f"{p}.project.bias"] = state[f"{p}.project.bias"].clone()
    return out
