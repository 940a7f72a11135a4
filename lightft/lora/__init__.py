"""Hand-written LoRA: the layer, applying it to a model, merging, and export both ways.

    model = load_model("path/to/model")
    apply_lora(model, targets="attn", r=8, alpha=16)  # q,k,v,o as the CLI's default; only LoRA A/B require grad
    ...train...
    save_adapter(model, "out/adapter")                # PEFT layout; or save_merged(model, "out/merged")

`apply_lora(..., dora=True)` gives DoRA (lightft/lora/dora.py); LoRA on layers quantised by
lightft.quant is QLoRA.
"""

from lightft.lora.apply import (  # noqa: F401
    GROUPS,
    apply_lora,
    lora_layers,
    lora_parameters,
    mark_trainable,
    merge_lora,
    resolve_targets,
    target_modules,
    unmerge_lora,
)
from lightft.lora.dora import DoRALinear  # noqa: F401
from lightft.lora.layer import LoRALinear  # noqa: F401
from lightft.lora.merged import merged_state_dict, save_merged  # noqa: F401
from lightft.lora.peft_io import load_adapter, save_adapter  # noqa: F401
