"""Image quality metrics on the pixel convention: pure functions of float32 ``[N,3,H,W]`` RGB tensors in [0,1].

Every metric returns a float64 tensor ``[N]``, one value per image (``float(m)`` for a single image), so a batch of
student outputs and a single benchmark image go through the same code.

Under a judge feature net, at the levels the caller names (defaults: VGG19's conv1_1..conv5_1 for style, conv4_2
for content; ``atelier.bench`` passes each judge's own levels), each averaged over its levels:

* ``style_distance``         relative Gram distance ``|G(out) - G(style)|^2 / |G(style)|^2`` (``losses.style_loss``;
                             Gram normalised by C*H*W, so the two images may differ in size); 0 when the Gram
                             statistics match.
* ``style_meanstd_distance`` per-channel mean and standard deviation over positions (AdaIN's statistics):
                             ``|mu(out) - mu(style)|^2 / (|mu(style)|^2 + eps)`` plus the same for the stds; any sizes.
* ``unit_feature_distance``  LPIPS without its learned weights (Zhang et al. 2018, Eq. 1 with w = 1): feature vectors
                             unit-normalised along channels at each position, squared L2 distance, mean over
                             positions; symmetric, 0 for identical images, at most 4; same-size images. Unlike
                             LPIPS, levels are averaged rather than summed, so the bound does not grow with them.
* ``content_distance``       relative feature distance ``|F(out) - F(content)|^2 / |F(content)|^2`` at one level
                             (``losses.content_loss``); same-size images.
* ``judge_distances``        the first three in one pass of the judge per image (what the benchmark records).

Pixel metrics:

* ``ssim``             structural similarity on luma (BT.601 Y), Gaussian window sigma 1.5, data range 1 (Wang et
                       al. 2004 as scikit-image implements it with ``gaussian_weights=True,
                       use_sample_covariance=False``); same-size images.
* ``psnr``             10 log10(1 / MSE) over all three channels, in dB; ``inf`` for identical images.
* ``rgb_uv_histogram`` / ``hellinger`` / ``colour_distance``: HistoGAN's RGB-uv colour histogram and the Hellinger
                       distance between two of them (0 = same colour distribution, 1 = disjoint).

Feature nets are anything with the ``features.base.FeatureNet`` contract (``net(x, layers) -> {name: tensor}``); the
benchmark passes its judge network, tests pass a tiny seeded net.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .colour import luminance
from .features.vgg import VGG19
from .losses import content_loss, gram, style_loss

STYLE_LAYERS = VGG19.default_style_layers          # the textbook levels, for VGG-named judges
CONTENT_LAYER = VGG19.default_content_layers[0]

# HistoGAN's defaults (Afifi et al. 2021, and RGBuvHistBlock in their reference code).
HIST_BINS = 64
HIST_BOUNDARY = (-3.0, 3.0)
HIST_SIGMA = 0.02
HIST_MAX_SIZE = 150
_EPS = 1e-6
# LPIPS's normalize_tensor epsilon: a position whose features are all zero stays a zero vector.
UNIT_EPS = 1e-10
# Keeps the mean/std distance finite for a flat target (all stds 0); negligible against real features' energy.
STAT_EPS = 1e-6


def _check(x: torch.Tensor, name: str = "image") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a float tensor [N,3,H,W] in [0,1], got {shape}")
    return x.float()


def _pair(a: torch.Tensor, b: torch.Tensor, same_size: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _check(a, "a"), _check(b, "b")
    if a.shape[0] != b.shape[0] and b.shape[0] != 1:
        raise ValueError(f"batch sizes differ: {a.shape[0]} and {b.shape[0]} (b may have 1 image, broadcast)")
    if same_size and a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"images must have the same size, got {tuple(a.shape[-2:])} and {tuple(b.shape[-2:])}")
    return a, b.expand(a.shape[0], *b.shape[1:]) if b.shape[0] != a.shape[0] else b


# ------------------------------------------------------------------------------------------- feature distances


def _features(net: torch.nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    # Each level once, even when it is both a style and a content level.
    return net(x.to(next(net.parameters()).device), list(dict.fromkeys(layers)))


def _per_image(term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], fa: dict[str, torch.Tensor],
               fb: dict[str, torch.Tensor], layers: Sequence[str]) -> torch.Tensor:
    """Mean over ``layers`` of ``term(a_i, b_i)`` for each image i (``term`` sees ``[1,C,H,W]`` features: the losses
    it reuses sum over their batch, and each image needs its own value)."""
    out = []
    for i in range(fa[layers[0]].shape[0]):
        d = [float(term(fa[n][i:i + 1], fb[n][i:i + 1])) for n in layers]
        out.append(sum(d) / len(d))
    return torch.tensor(out, dtype=torch.float64)


def _gram_term(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return style_loss(f, gram(target))


def _meanstd_term(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Population std (correction 0): the deepest levels of a small image may hold a single position.
    mf, sf = f.mean((2, 3)), f.std((2, 3), correction=0)
    mt, st = target.mean((2, 3)), target.std((2, 3), correction=0)
    return ((mf - mt).pow(2).sum() / (mt.pow(2).sum() + STAT_EPS)
            + (sf - st).pow(2).sum() / (st.pow(2).sum() + STAT_EPS))


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + UNIT_EPS)


def _unit_term(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (_unit(f) - _unit(target)).pow(2).sum(1).mean()


@torch.no_grad()
def style_distance(output: torch.Tensor, style: torch.Tensor, net: torch.nn.Module,
                   layers: Sequence[str] = STYLE_LAYERS) -> torch.Tensor:
    """Mean over ``layers`` of ``|G(out) - G(style)|^2 / |G(style)|^2`` (Gram matrices under ``net``)."""
    output, style = _pair(output, style, same_size=False)
    return _per_image(_gram_term, _features(net, output, layers), _features(net, style, layers), layers)


@torch.no_grad()
def style_meanstd_distance(output: torch.Tensor, style: torch.Tensor, net: torch.nn.Module,
                           layers: Sequence[str] = STYLE_LAYERS) -> torch.Tensor:
    """Mean over ``layers`` of the relative distance of per-channel means plus that of per-channel stds."""
    output, style = _pair(output, style, same_size=False)
    return _per_image(_meanstd_term, _features(net, output, layers), _features(net, style, layers), layers)


@torch.no_grad()
def unit_feature_distance(a: torch.Tensor, b: torch.Tensor, net: torch.nn.Module,
                          layers: Sequence[str] = (CONTENT_LAYER,)) -> torch.Tensor:
    """Mean over ``layers`` and positions of ``|f_a/|f_a| - f_b/|f_b||^2`` (channel vectors); in [0, 4]."""
    a, b = _pair(a, b)
    return _per_image(_unit_term, _features(net, a, layers), _features(net, b, layers), layers)


@torch.no_grad()
def content_distance(output: torch.Tensor, content: torch.Tensor, net: torch.nn.Module,
                     layer: str = CONTENT_LAYER) -> torch.Tensor:
    """``|F(out) - F(content)|^2 / |F(content)|^2`` at ``layer`` under ``net`` (same-size images)."""
    output, content = _pair(output, content)
    return _per_image(content_loss, _features(net, output, [layer]), _features(net, content, [layer]), [layer])


@torch.no_grad()
def judge_distances(output: torch.Tensor, content: torch.Tensor, style: torch.Tensor, net: torch.nn.Module,
                    style_layers: Sequence[str] = STYLE_LAYERS,
                    content_layers: Sequence[str] = (CONTENT_LAYER,)) -> dict[str, torch.Tensor]:
    """``style_gram``, ``style_meanstd`` (output vs style, any sizes) and ``content_unit`` (output vs content, same
    size): the values of ``style_distance``, ``style_meanstd_distance`` and ``unit_feature_distance``, with the
    output run through ``net`` once for every level."""
    output, content = _pair(output, content)
    _, style = _pair(output, style, same_size=False)
    fo = _features(net, output, [*style_layers, *content_layers])
    fs = _features(net, style, style_layers)
    fc = _features(net, content, content_layers)
    return {"style_gram": _per_image(_gram_term, fo, fs, style_layers),
            "style_meanstd": _per_image(_meanstd_term, fo, fs, style_layers),
            "content_unit": _per_image(_unit_term, fo, fc, content_layers)}


# ---------------------------------------------------------------------------------------------- pixel metrics


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)`` per image; ``inf`` when identical."""
    a, b = _pair(a, b)
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range ** 2 / mse)  # mse 0 -> inf, as it should


def ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """SSIM on luma (BT.601 Y) with a Gaussian window (``sigma``), data range 1, via scikit-image.

    Needs images of at least 7x7 pixels (scikit-image's smallest window).
    """
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b)
    ya = luminance(a.clamp(0, 1)).double().cpu().numpy()
    yb = luminance(b.clamp(0, 1)).double().cpu().numpy()
    h, w = ya.shape[-2:]
    # With Gaussian weights scikit-image filters with the full Gaussian and uses win_size (default
    # 2*int(3.5*sigma+0.5)+1 = 11) only to crop the border from the mean; tiny images get a smaller crop.
    win = min(2 * int(3.5 * sigma + 0.5) + 1, h if h % 2 else h - 1, w if w % 2 else w - 1)
    if win < 3:
        raise ValueError(f"images of {h}x{w} are too small for SSIM")
    out = [structural_similarity(ya[i, 0], yb[i, 0], data_range=1.0, gaussian_weights=True, sigma=sigma,
                                 use_sample_covariance=False, win_size=win)
           for i in range(a.shape[0])]
    return torch.tensor(out, dtype=torch.float64)


# -------------------------------------------------------------------------------------------- colour histogram


def rgb_uv_histogram(image: torch.Tensor, bins: int = HIST_BINS, sigma: float = HIST_SIGMA,
                     boundary: tuple[float, float] = HIST_BOUNDARY, max_size: int | None = HIST_MAX_SIZE,
                     intensity_scale: bool = True) -> torch.Tensor:
    """HistoGAN's RGB-uv histogram, ``[N,3,bins,bins]``, each image's histogram summing to 1.

    Definition (Afifi, Brubaker, Brown, "HistoGAN: Controlling Colors of GAN-Generated and Real Images via Color
    Histograms", CVPR 2021, Sec. 3.1, Eq. 1-2; defaults as in the authors' reference ``RGBuvHistBlock``):

    * for each channel c in (R, G, B) with the other two channels c1, c2 (in R, G, B order), project every pixel
      to log-chroma coordinates ``u_c = log(I_c + eps) - log(I_c1 + eps)``, ``v_c = log(I_c + eps) - log(I_c2 + eps)``
      (eps = 1e-6);
    * weight each pixel by its intensity ``I_y = sqrt(R^2 + G^2 + B^2 + eps)`` (``intensity_scale``);
    * spread it over ``bins`` x ``bins`` bin centres ``linspace(-3, 3, bins)`` in u and v with the
      inverse-quadratic kernel ``k(d) = 1 / (1 + (d / sigma)^2)``, sigma = 0.02, separably in u and v:
      ``H(u, v, c) = sum_x k(u_c(x) - u) k(v_c(x) - v) I_y(x)``;
    * normalise so the sum over c, u, v is 1.

    As in the reference code, an image larger than ``max_size`` on either side is first resized to
    ``max_size`` x ``max_size`` (bilinear); ``max_size=None`` keeps every pixel.
    """
    x = _check(image).clamp(0, 1)
    if max_size is not None and (x.shape[-2] > max_size or x.shape[-1] > max_size):
        x = F.interpolate(x, size=(max_size, max_size), mode="bilinear", align_corners=False)
    x = x.double()
    centres = torch.linspace(boundary[0], boundary[1], bins, dtype=torch.float64, device=x.device)
    hists = []
    for img in x:
        p = img.reshape(3, -1)                                   # [3, P]
        logp = torch.log(p + _EPS)
        iy = torch.sqrt(p.pow(2).sum(0) + _EPS) if intensity_scale else torch.ones_like(p[0])
        channels = []
        for c, (c1, c2) in enumerate(((1, 2), (0, 2), (0, 1))):
            u = logp[c] - logp[c1]
            v = logp[c] - logp[c2]
            ku = 1.0 / (1.0 + ((u[:, None] - centres[None]) / sigma) ** 2)   # [P, bins]
            kv = 1.0 / (1.0 + ((v[:, None] - centres[None]) / sigma) ** 2)
            channels.append((ku * iy[:, None]).T @ kv)                     # [bins(u), bins(v)]
        h = torch.stack(channels)
        hists.append(h / (h.sum() + _EPS))
    return torch.stack(hists).float()


def hellinger(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """Hellinger distance ``(1/sqrt 2) * || sqrt(h1) - sqrt(h2) ||_2`` per histogram (HistoGAN's colour metric).

    ``h1``/``h2`` are ``[N, ...]`` normalised histograms (each sums to 1); the result is in [0, 1].
    """
    a = h1.double().flatten(1).clamp_min(0)
    b = h2.double().flatten(1).clamp_min(0)
    if a.shape[0] != b.shape[0]:
        b = b.expand(a.shape[0], -1)
    d = (a.sqrt() - b.sqrt()).pow(2).sum(1).sqrt() / math.sqrt(2.0)
    return d.clamp(0.0, 1.0)  # rounding can put identical histograms a hair above 0 or disjoint ones above 1


def colour_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hellinger distance between the RGB-uv histograms of ``a`` and ``b`` (any sizes), per image."""
    a, b = _pair(a, b, same_size=False)
    return hellinger(rgb_uv_histogram(a), rgb_uv_histogram(b))

