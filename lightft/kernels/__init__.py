"""Fast paths behind one switch: `use_kernels(model, "auto" | "off")`, `--kernels auto|off` on the command line.

lightft/model.py holds the reference math. Each file here computes the same values faster where it
applies (a CPU, bf16, training, decoding) and is reached only through this switch:

| file              | speeds up                                               | equals                               |
| ----------------- | ------------------------------------------------------- | ------------------------------------ |
| attention.py      | bf16 CPU causal attention backward (blocked matmuls);   | `model.sdpa_attention`,              |
|                   | CPU training with attention dropout or bf16 padding     | `model.build_mask` (real positions)  |
|                   | masks: explicit scores + the cheap dropout mask;        | (another dropout mask for the seed)  |
|                   | right-padded causal batches attend without a mask       |                                      |
| fused.py          | RMSNorm and RoPE forward + backward, written by hand    | `model.rms_norm`, `rope.apply_rotary` |
| cross_entropy.py  | the LM-head loss in chunks, gradients in the same pass  | lm_head + `F.cross_entropy`          |
| packed.py         | decoding: bf16 weights packed for oneDNN                | the model's linear layers            |
| lookup.py         | batch-1 greedy decoding: drafted tokens checked at once | the plain greedy loop (generate.py)  |
| dropout.py        | CPU training dropout (hidden states, attention scores,  | `model.dropout` in rate and scale    |
|                   | LoRA inputs): 16-bit random numbers, 4 per draw         | (another mask for the same seed)     |

How they are reached: `use_kernels` swaps the functions in the model's `Ops` (model.py), the one
object every module calls its replaceable math through; parameters, state dict and config do not
change. With `inference=True` it also packs the weights (an inference-only change: no training
after it). Tasks and generation ask `enabled(model)` to choose the chunked loss and the drafting.

"auto" takes each kernel where it applies and the reference elsewhere (what the command line does by
default); "off" is the reference math everywhere: for checking a result against it, or for stepping
through the plain code in a debugger. tests/test_kernels_switch.py runs a training step and greedy
generation per family both ways.
"""

from __future__ import annotations

import dataclasses

from lightft.errors import LightftError
from lightft.kernels import attention, dropout, fused
from lightft.kernels.packed import pack_linears
from lightft.model import Ops, Transformer

MODES = ("auto", "off")
KERNEL_OPS = Ops(norm=fused.rms_norm, rotate=fused.rotary, attend=attention.attend,
                 mask=attention.right_padded_mask, drop=dropout.fast_dropout, kernels="auto")


def use_kernels(model: Transformer, mode: str = "auto", inference: bool = False) -> Transformer:
    """Install the fast paths on `model` ("auto") or put the reference math back ("off"), in place.

    `inference=True` (generation, few-shot) also packs bf16 CPU weights for oneDNN; packing is not
    undone by a later "off" (load the model again for that).
    """
    if mode not in MODES:
        raise LightftError(f"--kernels {mode!r} is not one of {', '.join(MODES)}")
    chosen = KERNEL_OPS if mode == "auto" else Ops()
    for f in dataclasses.fields(Ops):  # in place: every module holds this one `model.ops`
        setattr(model.ops, f.name, getattr(chosen, f.name))
    if inference and mode == "auto":
        pack_linears(model)
    return model


def enabled(model: Transformer) -> bool:
    """Whether `use_kernels(model, "auto")` is in force (tasks and generation choose their paths by it)."""
    return model.ops.kernels == "auto"
