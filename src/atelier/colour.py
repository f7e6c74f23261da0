"""Colour transforms on the pixel convention (float32 [N,3,H,W], RGB, [0,1]).

Used by the engines' ``preserve_color`` modes (Gatys, Ecker, Bethge, Hertzmann, Shechtman 2017, "Controlling
perceptual factors in neural style transfer"): luminance-only transfer, and colour matching of the style image to
the content before transfer.
"""

from __future__ import annotations

import torch

# ITU-R BT.601 full-range YCbCr (JPEG's): luma Y in [0,1], chroma Cb/Cr centred on 0.5.
_RGB_TO_YCBCR = torch.tensor([[0.299, 0.587, 0.114],
                              [-0.168736, -0.331264, 0.5],
                              [0.5, -0.418688, -0.081312]])
_OFFSET = torch.tensor([0.0, 0.5, 0.5])


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    m = _RGB_TO_YCBCR.to(rgb)
    return torch.einsum("ij,njhw->nihw", m, rgb) + _OFFSET.to(rgb).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    m = torch.linalg.inv(_RGB_TO_YCBCR.double()).to(ycc)
    return torch.einsum("ij,njhw->nihw", m, ycc - _OFFSET.to(ycc).view(1, 3, 1, 1))


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Y channel, ``[N,1,H,W]``."""
    return rgb_to_ycbcr(rgb)[:, :1]


def match_moments(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Shift and scale each channel of ``source`` to the mean and std of ``reference`` (used for luminance)."""
    dims = (0, 2, 3)
    s_mean, s_std = source.mean(dims, keepdim=True), source.std(dims, keepdim=True)
    r_mean, r_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    return ((source - s_mean) / (s_std + 1e-8) * r_std + r_mean).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-10)
    power = -0.5 if inverse else 0.5
    return vecs @ torch.diag(vals.pow(power)) @ vecs.T


def match_colour(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Recolour ``source`` so its RGB mean and covariance equal ``reference``'s.

    The linear colour transfer of Gatys et al. 2017 (section 5.1), in its symmetric-square-root form
    ``x' = C_r^1/2 C_s^-1/2 (x - mu_s) + mu_r``; computed in float64 for stable eigendecompositions.
    """
    def stats(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        px = img.double().permute(1, 0, 2, 3).reshape(3, -1)
        mu = px.mean(1, keepdim=True)
        centred = px - mu
        cov = centred @ centred.T / max(1, px.shape[1] - 1) + 1e-6 * torch.eye(3, dtype=px.dtype)
        return mu, cov

    mu_s, cov_s = stats(source)
    mu_r, cov_r = stats(reference)
    transform = _sqrtm(cov_r) @ _sqrtm(cov_s, inverse=True)
    n, _, h, w = source.shape
    px = source.double().permute(1, 0, 2, 3).reshape(3, -1)
    out = transform @ (px - mu_s) + mu_r
    return out.reshape(3, n, h, w).permute(1, 0, 2, 3).to(source.dtype).clamp(0, 1)
