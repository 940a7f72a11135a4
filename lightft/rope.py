"""Rotary position embeddings (RoPE) and the frequency-scaling schemes found in real configs.

RoPE rotates each (x_i, x_{i+d/2}) pair of a query/key head by an angle position * inv_freq_i, so
the dot product q.k depends only on the distance between positions. Long-context checkpoints
stretch the low frequencies; `inverse_frequencies` implements those stretches ("rope_type").
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from lightft.errors import LightftError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def inverse_frequencies(head_dim: int, theta: float, scaling: Optional[dict[str, Any]]) -> tuple[torch.Tensor, float]:
    """Return (inv_freq of shape (head_dim/2,), attention_factor applied to cos/sin)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq.float(), 1.0
    factor = float(scaling["factor"])
    if kind == "linear":
        # Position interpolation: positions are divided by `factor`, i.e. frequencies are.
        return (inv_freq / factor).float(), 1.0
    if kind == "llama3":
        # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        out = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        is_medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(is_medium, blended, out).float(), 1.0
    if kind == "yarn":
        old_len = float(scaling["original_max_position_embeddings"])
        beta_fast, beta_slow = float(scaling.get("beta_fast", 32)), float(scaling.get("beta_slow", 1))
        attention_factor = scaling.get("attention_factor") or (0.1 * math.log(factor) + 1.0)

        def dim_for(rotations: float) -> float:
            return (head_dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(theta))

        low = max(math.floor(dim_for(beta_fast)), 0)
        high = min(math.ceil(dim_for(beta_slow)), head_dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        extrapolation = 1 - ramp
        freq = inv_freq / factor * (1 - extrapolation) + inv_freq * extrapolation
        return freq.float(), float(attention_factor)
    raise LightftError(
        f"config.json: rope_scaling type {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
    )


class RotaryEmbedding(torch.nn.Module):
    """Computes cos/sin tables for explicit `position_ids` (so packed rows can restart at 0)."""

    def __init__(self, head_dim: int, theta: float, scaling: Optional[dict[str, Any]]):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        inv_freq, self.attention_factor = inverse_frequencies(head_dim, theta, scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset_parameters(self) -> None:
        """Recompute the (non-persistent) table, e.g. after building the model on the meta device."""
        inv_freq, _ = inverse_frequencies(self.head_dim, self.theta, self.scaling)
        self.inv_freq = inv_freq.to(self.inv_freq.device if self.inv_freq.device.type != "meta" else "cpu")

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin half tables (B, 1, T, head_dim/2): both halves of a head share the same angles."""
        # position_ids: (B, T) -> angles (B, T, head_dim/2) -> (B, 1, T, head_dim/2)
        angles = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        cos = (angles.cos() * self.attention_factor).to(dtype)[:, None]
        sin = (angles.sin() * self.attention_factor).to(dtype)[:, None]
        return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, heads, T, head_dim) by the angles in cos/sin (B, 1, T, head_dim/2).

    Each pair (x_i, x_{i+d/2}) turns by its angle: x·cos + rotate_half(x)·sin, with rotate_half
    (x1, x2) = (−x2, x1) and the half tables repeated for both halves. `lightft/kernels/fused.py`
    computes the same with a hand-written backward.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # (x1, x2) -> (-x2, x1)
    return x * torch.cat((cos, cos), -1) + rotated * torch.cat((sin, sin), -1)
