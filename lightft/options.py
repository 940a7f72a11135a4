"""Every user-settable training/eval option in one dataclass: the single source of CLI flags and config keys.

`lightft train` turns each field into a `--flag` (help text from the field's metadata), `--config`
files (YAML/TOML) may set the same keys, and the resolved values are saved in the run folder.
Adding an option = adding a field here; nothing else needs to know the list.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

from lightft.errors import LightftError


def opt(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class Options:
    # --- what to train on -------------------------------------------------------------------
    model: Optional[str] = opt(None, "Base model folder (HF layout) or an earlier run folder.")
    train: Optional[str] = opt(None, "Training data file (or folder for lm).")
    val: Optional[str] = opt(None, "Validation data file; without it a seeded --val-fraction of --train is held out.")
    out: Optional[str] = opt(None, "Run folder to create (or continue with --resume).")
    init: Optional[str] = opt(None, "Start from an earlier run's weights (backbone and, when shapes fit, head).")
    resume: bool = opt(False, "Continue the run in --out from its last checkpoint.")
    overwrite: bool = opt(False, "Replace an existing run folder at --out.")
    # --- adapter / what is trainable ----------------------------------------------------------
    lora: bool = opt(True, "Train LoRA adapters (--lora) or all weights (--full).", flag_pair="full")
    lora_r: int = opt(8, "LoRA rank r.")
    lora_alpha: float = opt(16.0, "LoRA alpha; the update is scaled by alpha / r.")
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.")
    lora_targets: str = opt("attn", "Comma list of q,k,v,o,gate,up,down or groups attn, mlp, all-linear.")
    rslora: bool = opt(False, "Scale LoRA by alpha / sqrt(r) (rsLoRA).")
    freeze: str = opt("none", "Extra freezing: none | embeddings | backbone (train the head only).",
                      choices=("none", "embeddings", "backbone"))
    # --- optimisation -------------------------------------------------------------------------
    epochs: int = opt(3, "Number of passes over the training data.")
    max_steps: int = opt(-1, "Stop after this many optimiser steps (-1: no limit).")
    batch_size: int = opt(16, "Examples per micro-batch (per device).")
    eval_batch_size: Optional[int] = opt(None, "Batch size for evaluation (default: 2 x --batch-size).")
    grad_accum: int = opt(1, "Micro-batches accumulated per optimiser step.")
    lr: Optional[float] = opt(None, "Peak learning rate (default 2e-4 with LoRA, 5e-5 full).")
    head_lr: Optional[float] = opt(None, "Learning rate of the freshly initialised task head (default: --lr).")
    weight_decay: float = opt(0.01, "AdamW weight decay (never applied to norms and biases).")
    warmup: float = opt(0.06, "Warm-up: a fraction of all steps (< 1) or a number of steps (>= 1).")
    schedule: str = opt("linear", "Decay after warm-up: linear | cosine | constant.",
                        choices=("linear", "cosine", "constant"))
    grad_clip: float = opt(1.0, "Clip the gradient norm to this value (0: off).")
    max_length: int = opt(256, "Maximum tokens per example; longer ones are counted and reported.")
    overlong: str = opt("truncate", "What to do with examples over --max-length: truncate | drop | error "
                        "(always counted and reported).", choices=("truncate", "drop", "error"))
    seed: int = opt(42, "Seed for initialisation, shuffling and splits.")
    # --- data ---------------------------------------------------------------------------------
    format: Optional[str] = opt(None, "Data format when the extension does not say (csv, tsv, jsonl, json, conll, txt).")
    text_column: str = opt("text", "Column / field holding the text.")
    pair_column: Optional[str] = opt(None, "Column holding the second text of a pair (classify).")
    label_column: str = opt("label", "Column / field holding the label.")
    val_fraction: float = opt(0.1, "Share of --train held out for validation when --val is not given.")
    group_by_length: bool = opt(False, "Batch examples of similar length together (less padding).")
    num_workers: int = opt(0, "DataLoader worker processes.")
    cache: bool = opt(True, "Cache tokenised data under $LIGHTFT_CACHE (default ~/.cache/lightft).")
    limit_train: Optional[int] = opt(None, "Use only the first N training examples (quick experiments).")
    limit_val: Optional[int] = opt(None, "Use only the first N validation examples.")
    # --- task heads ---------------------------------------------------------------------------
    pooling: str = opt("auto", "Sequence pooling: auto | cls | pooler | mean | last (auto: pooler/cls for "
                       "encoders, last token for decoders).", choices=("auto", "cls", "pooler", "mean", "last"))
    classifier_dropout: float = opt(0.1, "Dropout before the classification head.")
    # --- qa (extractive question answering) ---------------------------------------------------
    doc_stride: int = opt(128, "qa: tokens shared by consecutive windows of a long context.")
    max_query_length: int = opt(64, "qa: questions longer than this many tokens are cut (counted and reported).")
    max_answer_length: int = opt(30, "qa: longest answer span in tokens considered by post-processing.")
    n_best: int = opt(20, "qa: start / end candidates per window searched for the best span.")
    top_k: int = opt(5, "qa: ranked answers kept per question (predict output; BioASQ lenient accuracy / MRR).")
    question_groups: str = opt("auto", "qa: group ids <question>_<nnn> into one question for BioASQ factoid metrics "
                               "(auto: when the ids look like that), always (yes) or never (no).",
                               choices=("auto", "yes", "no"))
    # --- mlm (masked-LM continued pretraining) ------------------------------------------------
    mlm_probability: float = opt(0.15, "mlm: share of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).")
    whole_word_mask: bool = opt(False, "mlm: choose whole words (all their word pieces) instead of single tokens.")
    # --- ner ----------------------------------------------------------------------------------
    label_all_subwords: bool = opt(False, "ner: train on every sub-word of a word, not only its first "
                                   "(predictions always read the first).")
    # --- decoder tasks (lm, instruct) ------------------------------------------------------------
    doc_per_line: bool = opt(False, "lm: each line of a .txt file is its own document (default: one per file).")
    template: str = opt("auto", "instruct prompt template: auto (the model's chat template when it has one, "
                        "else alpaca) | alpaca | chat | a text with {instruction} and {input} placeholders.")
    train_on_inputs: bool = opt(False, "instruct: also compute the loss on prompt tokens (default: responses only).")
    packing: bool = opt(False, "instruct: pack several examples per row, never attending across them (lm always packs).")
    # --- hardware / Lightning -----------------------------------------------------------------
    precision: str = opt("32-true", "Lightning precision: 32-true | bf16-mixed | bf16-true | 16-mixed.")
    dtype: str = opt("float32", "dtype the base weights are loaded in (float32 | bfloat16 | float16).")
    accelerator: str = opt("auto", "cpu | gpu | auto.")
    devices: str = opt("auto", "Devices per node: a number, a list, or auto.")
    num_nodes: int = opt(1, "Number of nodes.")
    strategy: str = opt("auto", "auto | ddp | fsdp | deepspeed ... (passed to Lightning).")
    threads: Optional[int] = opt(None, "torch CPU threads (default: torch's choice).")
    val_every: Optional[int] = opt(None, "Validate every N optimiser steps (default: once per epoch).")
    checkpoint_every: Optional[int] = opt(None, "Also save a checkpoint every N optimiser steps.")
    log_every: int = opt(10, "Log loss / lr / tokens per second every N steps.")
    compile: bool = opt(False, "torch.compile each transformer block (one-off compile time; much faster steps on CPU).")
    pad_to_multiple: Optional[int] = opt(None, "Pad each batch's length up to a multiple of this (never past "
                                         "--max-length), so --compile sees few shapes; 0: off (default: 64 with "
                                         "--compile, else 0).")
    grad_checkpointing: bool = opt(False, "Recompute activations in the backward pass (less memory).")
    progress: bool = opt(True, "Show a progress bar.")

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 5e-5)

    def resolved_pad_multiple(self) -> int:
        """Batch lengths are padded to a multiple of this (1: the longest row, as without the option)."""
        if self.pad_to_multiple is not None and self.pad_to_multiple < 0:
            raise LightftError(f"--pad-to-multiple must be 0 (off) or a positive number of tokens, "
                               f"not {self.pad_to_multiple}")
        m = self.pad_to_multiple if self.pad_to_multiple is not None else (64 if self.compile else 0)
        return max(1, m)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "options") -> "Options":
        names = set(cls.field_names())
        clean = {}
        for key, value in data.items():
            k = key.replace("-", "_")
            if k not in names:
                raise LightftError(f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}")
            clean[k] = check_value(k, value, source)
        return cls(**clean)


def check_value(name: str, value: Any, source: str) -> Any:
    """A plain value of the field's type (ints accepted for floats); anything else is a one-line error."""
    hint = typing.get_type_hints(Options)[name]
    allowed = tuple(a for a in typing.get_args(hint) if a is not type(None)) or (hint,)
    if value is None and type(None) in typing.get_args(hint):
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if str in allowed and isinstance(value, int) and not isinstance(value, bool):  # devices: 2
        return str(value)
    if isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
        choices = next(f.metadata.get("choices") for f in fields(Options) if f.name == name)
        if choices and value not in choices:
            raise LightftError(f"{source}: {name} = {value!r} is not one of {', '.join(choices)}")
        return value
    want = " or ".join(t.__name__ for t in allowed)
    raise LightftError(f"{source}: {name} must be {want}, not {type(value).__name__} ({str(value)[:60]!r})")


def read_config_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """A YAML or TOML file of option keys. Only plain values are read (yaml.safe_load): no code, no objects."""
    p = Path(path)
    if not p.is_file():
        raise LightftError(f"{p}: config file not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise LightftError(f"{p}: malformed TOML ({e})") from None
    elif p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise LightftError(f"{p}: YAML configs need pyyaml (pip install pyyaml), or use TOML") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise LightftError(f"{p}: malformed YAML ({str(e).splitlines()[0]})") from None
    else:
        raise LightftError(f"{p}: config files must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise LightftError(f"{p}: expected a mapping of option keys at the top level")
    Options.from_dict(data, str(p))  # validate keys early
    base = p.parent
    for key in ("train", "val", "model", "out", "init"):  # relative paths are relative to the config file
        if isinstance(data.get(key), str) and not os.path.isabs(data[key]):
            data[key] = str(base / data[key])
    return data
