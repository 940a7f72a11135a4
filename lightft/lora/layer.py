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

QLoRA. The wrapped layer may be quantised (lightft.quant's `QuantLinear`: `weight` is None and the
weight lives in `qweight`, 4 bits per value, NF4 or Q4_1). Then the base product runs through `qweight.linear`,
which dequantises W just in time, and `base_weight()` dequantises on request; everything else is
the same. Merging such a layer cannot fold ΔW into 4-bit codes without losing it, so `merge()` gives
the layer a full-precision `weight` = dequantised W + ΔW (and `unmerge()` drops it again).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightft.model import Dropout, Ops


class LoRALinear(nn.Linear):
    """y = base(x) + scaling · B(A(dropout(x))) with the base weight and bias frozen."""

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 ops: Optional[Ops] = None):
        """`ops`: the wrapped model's `Ops` (model.py), so the input dropout follows its kernels switch."""
        assert r > 0, "r must be positive (apply_lora checks user input)"
        # Build on `meta` (no memory, no init), then adopt the existing parameters: no copy of W.
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight = linear.weight  # None when the base is quantised: then `qweight` holds it
        self.bias = linear.bias
        self.qweight = getattr(linear, "qweight", None)
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        like = self.weight if self.weight is not None else self.qweight.codes
        dtype = self.weight.dtype if self.weight is not None else self.qweight.dtype
        factory = dict(device=like.device, dtype=dtype)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))  # (out, r)
        if self.lora_A.device.type != "meta":
            # Same init as nn.Linear's weight (and PEFT's lora_A): Kaiming-uniform with a = sqrt(5).
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = Dropout(dropout, ops) if dropout > 0 else nn.Identity()
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_linear(x)
        if self.merged:
            return out  # ΔW already lives in self.weight
        # (…, in) -> (…, r) -> (…, out); two thin matmuls, ΔW is never formed.
        update = F.linear(F.linear(self.to_factor_dtype(self.lora_dropout(x)), self.lora_A), self.lora_B)
        # In place: the matmul's backward does not need its output, so this saves one (…, out) tensor.
        return out.add_(update.to(out.dtype), alpha=self.scaling)

    def to_factor_dtype(self, x: torch.Tensor) -> torch.Tensor:
        """x in the factors' dtype for the A matmul; under autocast x stays as it is, since autocast would
        cast it back for the matmul anyway (bf16 -> fp32 -> bf16 is exact): two passes over x fewer."""
        return x if torch.is_autocast_enabled(x.device.type) else x.to(self.lora_A.dtype)

    # --- the frozen base ------------------------------------------------------------------------
    @property
    def quantized(self) -> bool:
        return self.qweight is not None

    def base_linear(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """x Wᵀ (+ b) with the frozen base, or with the merged weight once merged."""
        b = self.bias if bias else None
        if self.weight is None:  # quantised and not merged: W is dequantised just in time
            return self.qweight.linear(x, b)
        return F.linear(x, self.weight, b)

    def base_weight(self) -> torch.Tensor:
        """The base W (dequantised when quantised), fp32, (out, in); not valid while merged."""
        assert not self.merged, "base_weight of a merged layer: unmerge first"
        return self.qweight.dequantize(torch.float32) if self.quantized else self.weight.float()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What an optimiser trains in this layer (A and B; DoRA adds its magnitude vector)."""
        return [self.lora_A, self.lora_B]

    # --- merging --------------------------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B · A, (out, in), computed in fp32 so bf16 merges do not lose the update."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """The weight a merged layer uses, fp32: W + ΔW."""
        return self.base_weight() + self.delta_weight()

    def unmerged_weight(self, merged: torch.Tensor) -> torch.Tensor:
        """Inverse of `merged_weight`, fp32: the base W back from the merged one."""
        return merged - self.delta_weight()

    def weight_dtype(self) -> torch.dtype:
        return self.qweight.dtype if self.quantized else self.weight.dtype

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + ΔW (a new full-precision `weight` when the base is quantised); a second call does nothing."""
        if self.merged:
            return
        merged = self.merged_weight().to(self.weight_dtype())
        if self.quantized:
            self.weight = nn.Parameter(merged, requires_grad=False)
        else:
            self.weight.copy_(merged)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W − ΔW (the base weight, up to float rounding); does nothing when not merged."""
        if not self.merged:
            return
        if self.quantized:  # the 4-bit codes were never changed: drop the merged copy
            self.register_parameter("weight", None)
        else:
            self.weight.copy_(self.unmerged_weight(self.weight.float()).to(self.weight.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        quant = f", {self.qweight.scheme}" if self.quantized else ""
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha}, rslora={self.rslora}, merged={self.merged}{quant}"
