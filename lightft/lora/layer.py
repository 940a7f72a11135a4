"""`LoRALinear`: an `nn.Linear` with a frozen weight plus a trainable low-rank update.

The math, for readers learning it. A linear layer computes y = x Wᵀ + b with W of shape
(out, in). Fine-tuning would learn a full update ΔW (out × in numbers). LoRA (Hu et al., 2021,
arXiv:2106.09685) assumes the update has low rank r and writes it as a product

    ΔW = (alpha / r) · B · A        A: (r, in),  B: (out, r)

so only r·(in + out) numbers are trained. The layer then computes

    y = x Wᵀ + b + (alpha / r) · (dropout(x) Aᵀ) Bᵀ

which never forms ΔW. A starts Kaiming-uniform (as `nn.Linear` initialises its own weight) and B
starts at zero, so at initialisation ΔW = 0 and the model is exactly the base model. `alpha / r`
keeps the update's size roughly independent of r; rsLoRA (Kalajdzievski, 2023, arXiv:2312.03732)
uses `alpha / sqrt(r)` instead, which behaves better at large r.

Merging adds ΔW into W once (`merge()`), after which the layer is a plain linear layer again (no
extra cost at inference); `unmerge()` subtracts it back. Both are idempotent.

The class subclasses `nn.Linear` and keeps its `weight` / `bias` parameters under the same names,
so a state dict of the base model loads into a LoRA-wrapped model untouched, and code that asks
`isinstance(m, nn.Linear)` still sees a linear layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """y = base(x) + scaling · B(A(dropout(x))) with the base weight and bias frozen."""

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        assert r > 0, "r must be positive (apply_lora checks user input)"
        # Build on `meta` (no memory, no init), then adopt the existing parameters: no copy of W.
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        factory = dict(device=linear.weight.device, dtype=linear.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))  # (out, r)
        if self.lora_A.device.type != "meta":
            # Same init as nn.Linear's weight (and PEFT's lora_A): Kaiming-uniform with a = sqrt(5).
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out  # ΔW already lives in self.weight
        # (…, in) -> (…, r) -> (…, out); two thin matmuls, ΔW is never formed.
        update = F.linear(F.linear(self.lora_dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)
        # In place: the matmul's backward does not need its output, so this saves one (…, out) tensor.
        return out.add_(update.to(out.dtype), alpha=self.scaling)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B · A, (out, in), computed in fp32 so bf16 merges do not lose the update."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + ΔW; a second call does nothing."""
        if not self.merged:
            self.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W − ΔW (the base weight, up to float rounding); does nothing when not merged."""
        if self.merged:
            self.weight.copy_((self.weight.float() - self.delta_weight()).to(self.weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}, rslora={self.rslora}, merged={self.merged}"
