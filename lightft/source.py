"""What a model loaded from a checkpoint folder knows of it: `ModelSource` and its `LoadReport`.

`checkpoint.load_model` fills one `ModelSource` and sets it as the model's `source` (declared on
`Transformer`; None for a model built in memory). Whoever needs a fact of the checkpoint reads it
there: the folder (tokenizer and generation_config.json files, export side files, PEFT's base
model), the key prefix (exports keep the input's keys), and the report of every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoadReport:
    """What happened to every key; `problems()` lists what could not be explained."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (a, b) vs model (c, d)"
    ignored: list[str] = field(default_factory=list)  # known keys we deliberately do not use
    initialised: list[str] = field(default_factory=list)  # optional parameters absent from the file

    def problems(self) -> list[str]:
        out = [f"shape mismatch {m}" for m in self.mismatched]
        out += [f"missing key {k}" for k in self.missing]
        out += [f"unexpected key {k}" for k in self.unexpected]
        return out

    def summary(self) -> str:
        return (f"loaded {self.loaded} tensors; ignored {len(self.ignored)}; freshly initialised "
                f"{len(self.initialised)}; missing {len(self.missing)}; unexpected {len(self.unexpected)}; "
                f"mismatched {len(self.mismatched)}")


@dataclass
class ModelSource:
    """The checkpoint folder a model was loaded from, and how the load went."""

    path: str  # the folder, resolved
    family: str  # "bert" | "gpt2" | "llama"
    model_type: str  # config.json's model_type ("bert", "roberta", "llama", "qwen2", ...)
    prefix: str  # the base-model prefix of its keys ("bert.", "model.", "" ...), kept by exports
    dtype: str  # the dtype the weights were loaded in ("float32", "bfloat16", ...)
    report: LoadReport = field(default_factory=LoadReport)
