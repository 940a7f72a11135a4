"""Every user-settable training/eval option, in typed groups: the single source of CLI flags, config keys
and of every list derived from them.

Each group is a small dataclass (run, adapter, lora, optimiser, data, runtime, and one per task); the
flat `Options` that `lightft train` fills is all groups at once (multiple inheritance flattens their
fields, so `opts.lora_r` works and an `Options` *is a* `LoraOptions`). A part of the program that needs
one group takes that group's type, and callers hand it `LoraOptions.of(opts)`.

Each field also declares, in its metadata, the facts other code used to keep in hand-written lists:
  resume  a `--resume` must use the same value (it shapes the data or the training trajectory);
  cache   it changes tokenisation, so it is part of the token cache key;
  eval    "flag": `lightft eval/predict` offer it (used when evaluating a base model);
          "override": the eval command's value replaces the run's recorded one;
  ge/gt/le/lt, finite, choices: the allowed values, checked when options are built from flags or files.
Adding an option = adding a field to its group; the CLI, resume checks, cache keys and eval flags follow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Optional, TypeVar, Union

from lightft.errors import LightftError
from lightft.precision import DTYPES, PRECISIONS, QUANT_SCHEMES
from lightft.safe_config import load_toml, load_yaml
from lightft.textfile import read_text_file

G = TypeVar("G", bound="OptionGroup")


def opt(default: Any, help: str, *, resume: bool = False, cache: bool = False, eval: Optional[str] = None,
        **meta: Any) -> Any:
    """A field with its help text and facts (see the module docstring)."""
    assert eval in (None, "flag", "override")
    return field(default=default, metadata={"help": help, "resume": resume, "cache": cache, "eval": eval, **meta})


class OptionGroup:
    """Base of the option groups: `group` names it in --help; `tasks` limits it to some tasks (empty: all)."""

    group: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def own_fields(cls) -> list[dataclasses.Field]:
        """The fields this group declares itself (not those of other groups an `Options` combines)."""
        names = cls.__dict__.get("__annotations__", {})
        return [f for f in fields(cls) if f.name in names]

    @classmethod
    def changed(cls, opts: "OptionGroup", but: tuple[str, ...] = ()) -> list[str]:
        """This group's own options that `opts` sets away from their defaults (less those in `but`): what a
        check names when the group as a whole has no effect (LoRA settings with --full, distillation settings
        without --teachers)."""
        return [f.name for f in cls.own_fields() if f.name not in but and getattr(opts, f.name) != f.default]

    @classmethod
    def of(cls: type[G], opts: "OptionGroup") -> G:
        """This group's typed sub-config, read from a flat `Options` (or any object with the fields)."""
        return cls(**{f.name: getattr(opts, f.name) for f in fields(cls)})


@dataclass
class RunOptions(OptionGroup):
    group: ClassVar[str] = "run"
    model: Optional[str] = opt(None, "Base model folder (HF layout) or an earlier run folder.", resume=True)
    train: Optional[str] = opt(None, "Training data file (or folder for lm).", resume=True)
    val: Optional[str] = opt(None, "Validation data file; without it a seeded --val-fraction of --train is held out.",
                             resume=True)
    out: Optional[str] = opt(None, "Run folder to create (or continue with --resume).")
    init: Optional[str] = opt(None, "Start from an earlier run's weights (backbone and, when shapes fit, head).",
                              resume=True)
    resume: bool = opt(False, "Continue the run in --out from its last checkpoint.")
    overwrite: bool = opt(False, "Replace the run folder at --out (only a run lightft wrote; it stays untouched until "
                          "the new run has read its data and model and starts training).")
    allow_data_change: bool = opt(False, "With --resume: continue although a data file changed since the run started "
                                  "(refused otherwise, naming the file).")
    seed: int = opt(42, "Seed for initialisation, shuffling and splits.", resume=True, eval="flag")


@dataclass
class AdapterOptions(OptionGroup):
    group: ClassVar[str] = "adapter"
    lora: bool = opt(True, "Train LoRA adapters (--lora, the default) or all weights (--full).", flag_pair="full",
                     resume=True)
    freeze: str = opt("none", "Extra freezing: none | embeddings | backbone (train the head only).",
                      choices=("none", "embeddings", "backbone"), resume=True)


@dataclass
class LoraOptions(OptionGroup):
    """Settings of the LoRA adapters; every one of them is refused with --full."""

    group: ClassVar[str] = "lora"
    lora_r: int = opt(8, "LoRA rank r.", resume=True, ge=1)
    lora_alpha: float = opt(16.0, "LoRA alpha; the update is scaled by alpha / r.", resume=True, gt=0)
    lora_dropout: float = opt(0.05, "Dropout on the LoRA input.", resume=True, ge=0, lt=1)
    lora_targets: str = opt("attn", "Comma list of q,k,v,o,gate,up,down or groups attn (q,k,v,o), mlp, all-linear.",
                            resume=True)
    rslora: bool = opt(False, "Scale LoRA by alpha / sqrt(r) (rsLoRA).", resume=True)
    dora: bool = opt(False, "DoRA: also train a magnitude per output row; LoRA learns the direction.", resume=True)
    quantize: str = opt("none", "Store the frozen base's block linears in 4 bits (QLoRA; LoRA only): nf4, or "
                        "q4_1 (lossless for a base converted from a Q4_1 GGUF), or not.",
                        resume=True, choices=QUANT_SCHEMES)


@dataclass
class OptimOptions(OptionGroup):
    group: ClassVar[str] = "optimiser"
    epochs: int = opt(3, "Number of passes over the training data.", ge=0)
    max_steps: int = opt(-1, "Stop after this many optimiser steps (-1: no limit).", ge=-1, not_zero=True)
    batch_size: int = opt(16, "Examples per micro-batch (per device).", resume=True, eval="override", ge=1)
    eval_batch_size: Optional[int] = opt(None, "Batch size for evaluation (default: 2 x --batch-size).",
                                         eval="override", ge=1)
    grad_accum: int = opt(1, "Micro-batches accumulated per optimiser step.", resume=True, ge=1)
    lr: Optional[float] = opt(None, "Peak learning rate (default 2e-4 with LoRA, 5e-5 full).", resume=True, gt=0)
    head_lr: Optional[float] = opt(None, "Learning rate of the freshly initialised task head (default: --lr).",
                                   resume=True, gt=0)
    layer_lr_decay: float = opt(1.0, "Layer-wise lr decay d: block i of L trains at lr * d^(L - i), the "
                                "embeddings at lr * d^(L + 1), the head at --lr (1: off; 0.8-0.95 is usual).",
                                resume=True, gt=0, le=1)
    weight_decay: float = opt(0.01, "AdamW weight decay (never applied to norms and biases).", resume=True, ge=0)
    warmup: float = opt(0.06, "Warm-up: a fraction of all steps (< 1) or a number of steps (>= 1).", resume=True,
                        ge=0)
    schedule: str = opt("linear", "Decay after warm-up: linear | cosine | constant.",
                        choices=("linear", "cosine", "constant"), resume=True)
    grad_clip: float = opt(1.0, "Clip the gradient norm to this value (0: off).", resume=True, ge=0)
    ema: float = opt(0.0, "Validate, keep and export an exponential moving average of the trained weights with "
                     "this decay (0: off; 0.99 averages about the last 100 steps).", resume=True, ge=0, lt=1)


@dataclass
class DataOptions(OptionGroup):
    group: ClassVar[str] = "data"
    max_length: int = opt(256, "Maximum tokens per example; longer ones are counted and reported.", resume=True,
                          cache=True, eval="flag", ge=2)
    overlong: str = opt("truncate", "What to do with examples over --max-length: truncate | drop | error "
                        "(always counted and reported).", choices=("truncate", "drop", "error"), resume=True,
                        cache=True)
    format: Optional[str] = opt(None, "Data format when the extension does not say (csv, tsv, jsonl, json, conll, "
                                "txt).", resume=True, cache=True, eval="override")
    text_column: str = opt("text", "Column / field holding the text.", resume=True, cache=True, eval="flag")
    val_fraction: float = opt(0.1, "Share of --train held out for validation when --val is not given.", resume=True,
                              gt=0, lt=1)
    group_by_length: Optional[bool] = opt(None, "Batch examples of similar length together (less padding; "
                                          "default: on, except for packed rows: lm, instruct --packing).",
                                          resume=True)
    group_window: int = opt(50, "With length grouping: examples are sorted by length within windows of this "
                            "many shuffled batches (larger: less padding; smaller: batches mixed more).",
                            resume=True, ge=1)
    num_workers: int = opt(0, "DataLoader worker processes.", ge=0)
    cache: bool = opt(True, "Cache tokenised data under $LIGHTFT_CACHE (default ~/.cache/lightft).")
    limit_train: Optional[int] = opt(None, "Use only the first N training examples (quick experiments).", resume=True,
                                     ge=1)
    limit_val: Optional[int] = opt(None, "Use only the first N validation (or evaluated) examples.",
                                   eval="override", ge=1)


@dataclass
class ClassifyOptions(OptionGroup):
    group: ClassVar[str] = "classify"
    tasks: ClassVar[tuple[str, ...]] = ("classify",)
    pair_column: Optional[str] = opt(None, "Column holding the second text of a pair.", resume=True, cache=True,
                                     eval="flag")
    label_column: str = opt("label", "Column / field holding the label.", resume=True, cache=True, eval="flag")
    pooling: str = opt("auto", "Sequence pooling: auto | cls | pooler | mean | last (auto: pooler/cls for "
                       "encoders, last token for decoders).", choices=("auto", "cls", "pooler", "mean", "last"),
                       resume=True)


@dataclass
class HeadOptions(OptionGroup):
    group: ClassVar[str] = "head"
    tasks: ClassVar[tuple[str, ...]] = ("classify", "ner")
    classifier_dropout: float = opt(0.1, "Dropout before the classification head.", resume=True, ge=0, lt=1)
    label_smoothing: float = opt(0.0, "Label smoothing of the training loss: the target puts this much "
                                 "probability evenly on all labels (validation loss stays plain).", resume=True,
                                 ge=0, lt=1)


def comma_list(text: Optional[str]) -> list[str]:
    """The non-empty, stripped items of a comma list option (e.g. --teachers a,b)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


@dataclass
class DistillOptions(OptionGroup):
    """Knowledge distillation: the student learns the teachers' averaged probabilities beside the gold labels."""

    group: ClassVar[str] = "distill"
    tasks: ClassVar[tuple[str, ...]] = ("classify",)
    teachers: Optional[str] = opt(None, "Comma list of trained classify runs (or exports) with the same labels: "
                                  "their probabilities on --train, averaged, become soft targets (their own "
                                  "model and tokenizer read the text; computed once before training).",
                                  resume=True)
    distill_alpha: float = opt(0.5, "With --teachers: the training loss is alpha x cross-entropy with the "
                               "teachers' probabilities + (1 - alpha) x cross-entropy with the gold labels.",
                               resume=True, ge=0, le=1)
    distill_temperature: float = opt(1.0, "With --teachers: soften both sides of the soft term by T: the "
                                     "targets become p^(1/T) renormalised (the teachers' averaged probabilities), "
                                     "the student's softmax(logits / T), and the term is scaled by T^2 so its "
                                     "gradient keeps its size (Hinton et al.); 1 is plain cross-entropy.",
                                     resume=True, gt=0)


@dataclass
class NerOptions(OptionGroup):
    group: ClassVar[str] = "ner"
    tasks: ClassVar[tuple[str, ...]] = ("ner",)
    label_all_subwords: bool = opt(False, "Train on every sub-word of a word, not only its first "
                                   "(predictions always read the first).", resume=True, cache=True)


@dataclass
class QAOptions(OptionGroup):
    group: ClassVar[str] = "qa"
    tasks: ClassVar[tuple[str, ...]] = ("qa",)
    doc_stride: int = opt(128, "Tokens shared by consecutive windows of a long context.", resume=True, cache=True,
                          ge=0)
    max_query_length: int = opt(64, "Questions longer than this many tokens are cut (counted and reported).",
                                resume=True, cache=True, ge=1)
    max_answer_length: int = opt(30, "Longest answer span in tokens considered by post-processing.", ge=1)
    n_best: int = opt(20, "Start / end candidates per window searched for the best span.", ge=1)
    top_k: int = opt(5, "Ranked answers kept per question (predict output; BioASQ lenient accuracy / MRR).", ge=1)
    question_groups: str = opt("auto", "Group ids <question>_<nnn> into one question for BioASQ factoid metrics "
                               "(auto: when the ids look like that), always (yes) or never (no).",
                               choices=("auto", "yes", "no"))


@dataclass
class MLMOptions(OptionGroup):
    group: ClassVar[str] = "mlm"
    tasks: ClassVar[tuple[str, ...]] = ("mlm",)
    mlm_probability: float = opt(0.15, "Share of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).",
                                 resume=True, gt=0, lt=1)
    whole_word_mask: bool = opt(False, "Choose whole words (all their word pieces) instead of single tokens.",
                                resume=True)


@dataclass
class LMOptions(OptionGroup):
    group: ClassVar[str] = "lm"
    tasks: ClassVar[tuple[str, ...]] = ("lm",)
    doc_per_line: bool = opt(False, "Each line of a .txt file is its own document (default: one per file).",
                             resume=True, cache=True, eval="flag")


@dataclass
class InstructOptions(OptionGroup):
    group: ClassVar[str] = "instruct"
    tasks: ClassVar[tuple[str, ...]] = ("instruct",)
    template: str = opt("auto", "Prompt template: auto (the model's chat template when it has one, else alpaca) | "
                        "alpaca | chat | a text with {instruction} and {input} placeholders.", resume=True,
                        cache=True, eval="flag")
    train_on_inputs: bool = opt(False, "Also compute the loss on prompt tokens (default: responses only).",
                                resume=True, cache=True)
    packing: bool = opt(False, "Pack several examples per row, never attending across them (lm always packs).",
                        resume=True, cache=True)


@dataclass
class RuntimeOptions(OptionGroup):
    group: ClassVar[str] = "runtime"
    precision: str = opt("auto", "Lightning precision: auto | 32-true | bf16-mixed | bf16-true | 16-mixed (auto: "
                         "bf16-mixed on CPUs with AMX / AVX-512-BF16 and bf16 GPUs, else 32-true; run.json records "
                         "the choice).", eval="flag", choices=PRECISIONS)
    dtype: str = opt("auto", "dtype the base weights are loaded in: auto | float32 | bfloat16 | float16 (auto: "
                     "bfloat16 for frozen weights under a bf16 precision, else float32; LoRA factors and heads "
                     "are always float32).", resume=True, eval="flag", choices=DTYPES)
    accelerator: str = opt("auto", "cpu | gpu | auto.")
    devices: str = opt("auto", "Devices per node: a number, a list, or auto.")
    num_nodes: int = opt(1, "Number of nodes.", resume=True, ge=1)
    strategy: str = opt("auto", "auto | ddp | fsdp | deepspeed ... (passed to Lightning).")
    threads: Optional[int] = opt(None, "torch CPU threads (default: torch's choice; 1 on a busy machine).",
                                 eval="override", ge=1)
    val_every: Optional[int] = opt(None, "Validate every N optimiser steps (default: once per epoch).", ge=1)
    checkpoint_every: Optional[int] = opt(None, "Also save a checkpoint every N optimiser steps.", ge=1)
    log_every: int = opt(10, "Log loss / lr / tokens per second every N steps.", ge=1)
    logger: str = opt("csv", "Where the log goes: csv (RUN/logs/metrics.csv) | tensorboard (RUN/logs/tensorboard event "
                      "files as well; the CSV log, which plot and report read, is always written).",
                      choices=("csv", "tensorboard"))
    compile: bool = opt(False, "torch.compile each transformer block (one-off compile time; much faster steps on "
                        "CPU).")
    pad_to_multiple: Optional[int] = opt(None, "Pad each batch's length up to a multiple of this (never past "
                                         "--max-length), so --compile sees few shapes; 0: off (default: 64 with "
                                         "--compile, else 0).")  # checked by resolved_pad_multiple
    grad_checkpointing: bool = opt(False, "Recompute activations in the backward pass (less memory).")
    kernels: str = opt("auto", "Fast paths of lightft/kernels/, gradient clipping inside the fused AdamW and freed "
                       "memory kept between steps (auto: each where it applies) or the reference math of "
                       "lightft/model.py and Lightning's clipping only (off); same results within float rounding.",
                       eval="override",
                       choices=("auto", "off"))
    progress: bool = opt(True, "Show a progress bar.", eval="override")
    requeue_signal: str = opt("SIGUSR1", "Under SLURM: the signal asking to checkpoint and requeue the job (sbatch "
                              "--signal=USR1@120); the requeued job continues the run. none: off.",
                              choices=("SIGUSR1", "SIGUSR2", "SIGHUP", "SIGALRM", "none"))


# The order groups appear in --help; task groups come after the common ones.
GROUPS: tuple[type[OptionGroup], ...] = (RunOptions, AdapterOptions, LoraOptions, OptimOptions, DataOptions,
                                         ClassifyOptions, HeadOptions, DistillOptions, NerOptions, QAOptions,
                                         MLMOptions, LMOptions, InstructOptions, RuntimeOptions)


@dataclass
class Options(RunOptions, AdapterOptions, LoraOptions, OptimOptions, DataOptions, ClassifyOptions, HeadOptions,
              DistillOptions, NerOptions, QAOptions, MLMOptions, LMOptions, InstructOptions, RuntimeOptions):
    """All groups at once: what a training run is configured with and what run.json records."""

    def resolved_lr(self) -> float:
        """--lr, or its default: 2e-4 for LoRA adapters, 5e-5 when every weight trains."""
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


# --- facts derived from the metadata ------------------------------------------------------------

def option_field(name: str) -> dataclasses.Field:
    return Options.__dataclass_fields__[name]


def group_of(name: str) -> type[OptionGroup]:
    return next(g for g in GROUPS if any(f.name == name for f in g.own_fields()))


def groups_for(task: Optional[str]) -> list[type[OptionGroup]]:
    """The groups that apply to `task`: the common ones plus the task's own (all groups for None)."""
    return [g for g in GROUPS if task is None or not g.tasks or task in g.tasks]


def names_where(key: str, value: Any = True, task: Optional[str] = None) -> list[str]:
    """Option names whose metadata `key` equals `value`, among the groups that apply to `task`."""
    return [f.name for g in groups_for(task) for f in g.own_fields() if f.metadata.get(key) == value]


def resume_must_match() -> list[str]:
    return names_where("resume")


def cache_options(opts: Options, task: str) -> dict[str, Any]:
    """The values of every option that shapes `task`'s tokenised data (part of the cache key)."""
    return {name: getattr(opts, name) for name in names_where("cache", task=task)}


def eval_flags(task: Optional[str] = None) -> list[str]:
    """The options `lightft eval` / `predict` offer for `task`."""
    return [f.name for g in groups_for(task) for f in g.own_fields() if f.metadata.get("eval")]


def eval_overrides() -> list[str]:
    return names_where("eval", "override")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_value(name: str, value: Any, source: str) -> Any:
    """A plain value of the field's type within its range (ints accepted for floats); else a one-line error."""
    hint = typing.get_type_hints(Options)[name]
    allowed = tuple(a for a in typing.get_args(hint) if a is not type(None)) or (hint,)
    if value is None and type(None) in typing.get_args(hint):
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif float in allowed and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    elif str in allowed and isinstance(value, int) and not isinstance(value, bool):  # devices: 2
        value = str(value)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        want = " or ".join(t.__name__ for t in allowed)
        raise LightftError(f"{source}: {name} must be {want}, not {type(value).__name__} ({str(value)[:60]!r})")
    check_range(name, value, source)
    return value


def check_range(name: str, value: Any, source: str) -> None:
    meta = option_field(name).metadata
    where = flag(name) if source in ("options", "command line") else f"{source}: {name}"
    choices = meta.get("choices")
    if choices and value not in choices:
        raise LightftError(f"{where} {value!r} is not one of {', '.join(choices)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise LightftError(f"{where} must be a finite number, not {value}")
    bounds = {"ge": (lambda v, b: v >= b, "at least"), "gt": (lambda v, b: v > b, "above"),
              "le": (lambda v, b: v <= b, "at most"), "lt": (lambda v, b: v < b, "below")}
    for key, (ok, words) in bounds.items():
        if key in meta and isinstance(value, (int, float)) and not ok(value, meta[key]):
            positive = " (a positive number)" if (key, meta[key]) in (("ge", 1), ("gt", 0)) else ""
            raise LightftError(f"{where} must be {words} {meta[key]}{positive}, not {value}")
    if meta.get("not_zero") and value == 0:
        raise LightftError(f"{where} must not be 0")


def read_config_file(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """A YAML or TOML file of option keys. Only plain values are read (lightft.safe_config): no code, no objects."""
    p = Path(path)
    if not p.is_file():
        raise LightftError(f"{p}: config file not found")
    text = read_text_file(p, "config file")
    if p.suffix.lower() == ".toml":
        data = load_toml(text, p)
    elif p.suffix.lower() in (".yaml", ".yml"):
        data = load_yaml(text, p) or {}
    else:
        raise LightftError(f"{p}: config files must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise LightftError(f"{p}: expected a mapping of option keys at the top level")
    Options.from_dict(data, str(p))  # validate keys early
    base = p.parent
    for key in ("train", "val", "model", "out", "init"):  # relative paths are relative to the config file
        if isinstance(data.get(key), str) and not os.path.isabs(data[key]):
            data[key] = str(base / data[key])
    if isinstance(data.get("teachers"), str):  # a comma list of run folders, each relative to the file too
        data["teachers"] = ",".join(t if os.path.isabs(t) else str(base / t) for t in comma_list(data["teachers"]))
    return data
