"""The textbook Gatys loop: the speed baseline every benchmark figure is a ratio against.

What "textbook" means here (the shape of the PyTorch tutorial and most reimplementations of Gatys et al. 2016):

* the whole of VGG19's feature stack (all 16 convs and 5 pools) runs end to end at every loss evaluation, even
  though the loss only reads conv1_1..conv5_1 (no truncation);
* one scale at the output size (no coarse-to-fine);
* L-BFGS in one ``step(max_iter=N, max_eval=N)`` call, pixels clamped to [0,1] at the start of each closure.

The objective is atelier's own (``atelier.losses``, the default weights and layers of ``StylizeOptions``) and the
convs shared with atelier's VGG19 carry the same weights, so its loss values compare directly with the engine's
at the final scale. conv5_2..conv5_4, which atelier never loads, get fixed seeded random weights: they only cost
time, their outputs are never read. Built for the torchvision-layout VGG19 (zero padding, ImageNet mean/std).
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from torch import nn

from ..options import StylizeOptions
from ..losses import gram
from ..methods.optimize import GatysMethod, objective
from ..progress import Callback, StepInfo

_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


class TextbookVGG19(nn.Module):
    """The whole of VGG19's feature stack, run end to end every time (no truncation)."""

    plan = list(_PLAN)

    def __init__(self, source_convs: list[nn.Conv2d], identity: str = "vgg19"):
        super().__init__()
        self.identity = f"textbook-{identity}"
        layers, names, cin, block, idx = [], [], 3, 1, 1
        for v in self.plan:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                names.append(f"pool{block}")
                block, idx = block + 1, 1
            else:
                conv = nn.Conv2d(cin, v, 3, padding=1)
                layers += [conv, nn.ReLU()]
                names += [f"conv{block}_{idx}", f"relu{block}_{idx}"]
                cin, idx = v, idx + 1
        self.body = nn.Sequential(*layers)
        self.names = names
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        g = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            for i, conv in enumerate(convs):
                if i < len(source_convs):  # same weights as atelier's net for the layers both have
                    conv.weight.copy_(source_convs[i].weight)
                    conv.bias.copy_(source_convs[i].bias)
                else:  # conv5_2..conv5_4: atelier never loads them; random here, they only cost time
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (9 * conv.in_channels)) ** 0.5)
                    conv.bias.zero_()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @classmethod
    def from_feature_net(cls, net: nn.Module) -> "TextbookVGG19":
        """Copy the 3x3 convs of atelier's VGG19 (conv1_1..conv5_1, in order) into a full textbook stack."""
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        device = next(net.parameters()).device
        return cls(convs, getattr(net, "identity", "vgg19")).to(device)  # copy_ crosses devices

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        h = (x - self.mean) / self.std
        for name, m in zip(self.names, self.body):
            if isinstance(m, nn.MaxPool2d) and min(h.shape[-2:]) < 2:
                continue  # only on tiny test images: a map this small cannot be pooled, and deeper convs still run
            h = m(h)
            out[name] = h
        return out


def textbook_gatys(content: torch.Tensor, style: torch.Tensor, net: nn.Module,
                   options: Optional[StylizeOptions] = None, evals: int = 200,
                   callback: Optional[Callback] = None) -> tuple[torch.Tensor, list[tuple[float, float]]]:
    """Run the textbook loop for ``evals`` loss evaluations at ``content``'s size.

    ``net`` is atelier's VGG19 (its convs are copied) or a ``TextbookVGG19`` (used as is, so a caller running many
    images builds it once). ``options`` supplies the loss weights and layers (only those fields are read).
    Returns the image (``[1,3,H,W]`` in [0,1], on ``content``'s device) and the trace: one
    ``(seconds since start, loss)`` per evaluation. ``callback`` gets a ``StepInfo`` per evaluation
    (engine ``"textbook"``), like the engines' callbacks.
    """
    o = GatysMethod().resolve(options or StylizeOptions())  # VGG19's defaults for what the caller left unset
    full = net if isinstance(net, TextbookVGG19) else TextbookVGG19.from_feature_net(net)
    full = full.to(content.device)
    t0 = time.perf_counter()  # like the engine's clock: target features count, building the net does not
    with torch.no_grad():
        fc, fs = full(content), full(style.to(content.device))
    tc = {n: fc[n] for n in o.content_layers}
    ts = {n: gram(fs[n]) for n in o.style_layers}
    del fc, fs
    x = content.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=evals, max_eval=evals, history_size=100,
                            tolerance_grad=0.0, tolerance_change=0.0)
    trace: list[tuple[float, float]] = []
    size = (int(x.shape[-2]), int(x.shape[-1]))

    def closure() -> torch.Tensor:
        with torch.no_grad():
            x.clamp_(0, 1)
        opt.zero_grad()
        loss, weighted = objective(full(x), tc, ts, x, o)
        loss.backward()
        trace.append((time.perf_counter() - t0, float(loss.detach())))
        if callback is not None:
            n = len(trace)
            parts = {k: float(v.detach()) for k, v in weighted.items()}
            callback(StepInfo("textbook", 0, 1, size, n, evals, n, n, trace[-1][1], parts, trace[-1][0]))
        return loss

    opt.step(closure)
    return x.detach().clamp(0, 1), trace
