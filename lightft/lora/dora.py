"""`DoRALinear`: LoRA that learns a weight's direction and its per-row magnitude separately.

The math. DoRA (Liu et al., 2024, arXiv:2402.09353) splits a weight W (out, in) into a magnitude
m (one number per output row, m_j = ‖W_j‖₂) and a direction V = W / ‖W‖ (rows of unit length).
Fine-tuning then trains m directly and the direction through LoRA:

    W' = m · (W + ΔW) / ‖W + ΔW‖        ΔW = scaling · B · A  (as in LoRA),   norms per output row

At initialisation B = 0 and m = ‖W‖, so W' = W: the model starts as the base model, as with LoRA.
The paper observes that full fine-tuning changes magnitude and direction in a way LoRA alone
cannot imitate, and DoRA can; the cost is one vector of `out` numbers per layer more to train, and
the row norms of W + ΔW in every forward pass (an (out, in) temporary).

Following the paper (section 4.3) the norm ‖W + ΔW‖ is treated as a constant in backward (no
gradient flows through it), which saves memory and, the authors report, changes little. The forward
pass never forms W' either: with x_d = dropout(x) and s = m / ‖W + ΔW‖ (one factor per output),

    y = x Wᵀ + b + (s − 1) · x_d Wᵀ + s · scaling · (x_d Aᵀ) Bᵀ

which is exactly x W'ᵀ + b when there is no dropout. These are PEFT's definitions (norm over each
output row of W + scaling·BA, `lora_magnitude_vector` of shape (out,), detached norm, the same
dropout handling), so adapters move between the two unchanged (tests/test_dora.py).

Merging writes W' into the weight; unmerging needs ‖W + ΔW‖ from before the merge, which is kept.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightft.lora.layer import LoRALinear
from lightft.model import Ops


class DoRALinear(LoRALinear):
    """LoRALinear plus a trainable magnitude per output row (`lora_magnitude_vector`, shape (out,))."""

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 ops: Optional[Ops] = None):
        super().__init__(linear, r, alpha, dropout, rslora, ops)
        dtype = self.lora_A.dtype
        self.lora_magnitude_vector = nn.Parameter(torch.empty(self.out_features, dtype=dtype,
                                                              device=self.lora_A.device))  # (out,)
        if self.lora_A.device.type != "meta":
            self.reset_magnitude()
        self._merge_norm: Optional[torch.Tensor] = None  # ‖W + ΔW‖ at merge time, for unmerge

    @torch.no_grad()
    def reset_magnitude(self) -> None:
        """m = ‖W + ΔW‖ per row: the layer then computes exactly the base + LoRA output."""
        self.lora_magnitude_vector.copy_(self.weight_norm())

    @torch.no_grad()
    def weight_norm(self, base: Optional[torch.Tensor] = None) -> torch.Tensor:
        """‖W + ΔW‖ per output row, fp32 (out,); a constant for autograd (see the module docstring)."""
        w = self.base_weight() if base is None else base
        return torch.linalg.vector_norm(w + self.delta_weight(), dim=1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B, self.lora_magnitude_vector]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_linear(x)
        if self.merged:
            return out
        x_d = self.lora_dropout(x)
        scale = (self.lora_magnitude_vector.float() / self.weight_norm()).to(out.dtype)  # (out,), grad -> m only
        lora = F.linear(F.linear(self.to_factor_dtype(x_d), self.lora_A), self.lora_B).to(out.dtype)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:  # x_d == x: reuse x Wᵀ
            base = out if self.bias is None else out - self.bias
        else:  # dropout: PEFT applies the magnitude correction to the dropped-out input
            base = self.base_linear(x_d, bias=False)
        return out + (scale - 1) * base + scale * self.scaling * lora

    def merged_weight(self) -> torch.Tensor:
        norm = self.weight_norm()
        self._merge_norm = norm
        factor = (self.lora_magnitude_vector.float() / norm)[:, None]  # (out, 1)
        return factor * (self.base_weight() + self.delta_weight())

    def unmerged_weight(self, merged: torch.Tensor) -> torch.Tensor:
        assert self._merge_norm is not None, "unmerge without a merge"
        factor = (self.lora_magnitude_vector.float() / self._merge_norm)[:, None]
        return merged / factor - self.delta_weight()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dora=True"
