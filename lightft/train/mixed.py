"""bf16 autocast (`--precision bf16-mixed`) that lets the fused AdamW clip gradients.

Lightning's mixed-precision plugin refuses gradient clipping with an optimizer that unscales
gradients inside its own step (the fused AdamW lightft uses: lightft/tasks/optim.py). That is a
concern of fp16's loss scaler only: bf16 has no scaler, so the gradients are already true values
and clipping them is plain `clip_grad_norm_`.
"""

from __future__ import annotations

from typing import Union

from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch.optim import Optimizer


class BF16Mixed(MixedPrecision):
    """Lightning's "bf16-mixed" with clipping that works for every optimizer (see the module docstring)."""

    def __init__(self, device: str):
        super().__init__("bf16-mixed", device)

    def clip_gradients(self, optimizer: Optimizer, clip_val: Union[int, float] = 0.0,
                       gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM) -> None:
        assert self.scaler is None  # bf16 never scales the loss
        Precision.clip_gradients(self, optimizer, clip_val=clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
