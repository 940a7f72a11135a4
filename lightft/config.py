"""The family-agnostic description of a transformer that `lightft.model` builds.

Each family reader in `lightft.families` turns a Hugging Face `config.json` into this dataclass;
the model core only ever looks at these fields, so a new family costs a reader and a key map,
not a new model file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

from lightft.errors import LightftError

# The most parameters a config may describe (a few times the largest open models): a typo or a hostile
# config.json stops here with one line instead of building or allocating for minutes.
MAX_PARAMETERS = 2e12


@dataclass
class ModelConfig:
    family: str  # "bert" | "gpt2" | "llama" (the reader that produced this config)
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_kv_heads: Optional[int] = None  # None -> same as num_heads (no GQA)
    head_dim: Optional[int] = None  # None -> hidden_size // num_heads
    causal: bool = True  # decoder (causal mask) or encoder (bidirectional)
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    pre_norm: bool = True  # GPT-2/Llama normalise before each sub-layer, BERT after
    embed_norm: bool = False  # BERT normalises the summed embeddings
    final_norm: bool = True  # GPT-2 `ln_f`, Llama `norm`; BERT has none
    position: Literal["learned", "rope"] = "learned"
    max_positions: int = 2048
    position_offset: int = 0  # RoBERTa counts positions from padding_idx + 1
    padding_positions: bool = False  # RoBERTa: pad tokens keep position `padding_idx`
    type_vocab_size: int = 0  # BERT's token-type (segment A/B) embeddings
    mlp: Literal["plain", "gated"] = "plain"  # up->act->down, or SwiGLU-style gate*up->down
    activation: str = "gelu"  # gelu (erf) | gelu_tanh | silu | relu
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    fused_qkv: bool = False  # GPT-2 stores q,k,v in one `c_attn` matrix; we keep it fused
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict[str, Any]] = None
    pooler: bool = False  # BERT's tanh(dense(h[CLS]))
    lm_head: bool = True  # decoders produce logits over the vocabulary
    tie_embeddings: bool = False
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int | list[int]] = None
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False)  # original config.json

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads
        assert self.num_heads % self.num_kv_heads == 0, "num_heads must be a multiple of num_kv_heads"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hf_config")
        return d

    def estimated_parameters(self) -> float:
        """Parameters the dimensions describe (embeddings, attention, MLP; norms and biases left out)."""
        h, q = self.hidden_size, self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        mlp = (3 if self.mlp == "gated" else 2) * h * self.intermediate_size
        per_layer = 2 * h * q + 2 * h * kv + mlp
        positions = self.max_positions * h if self.position == "learned" else 0
        head = self.vocab_size * h if self.lm_head and not self.tie_embeddings else 0
        return float(self.num_layers * per_layer + self.vocab_size * h + positions + head)

    def max_tokens(self) -> Optional[int]:
        """The longest sequence the position embeddings can index (None: rotary, no table to run past)."""
        if self.position != "learned":
            return None
        # RoBERTa: real tokens take positions padding_idx + 1 ... (position_offset + T must stay inside the table)
        return self.max_positions - self.position_offset - (1 if self.padding_positions else 0)


def check_model_config(cfg: ModelConfig, source: str = "config.json") -> ModelConfig:
    """Refuse a config whose size is beyond reason before any module is built (see MAX_PARAMETERS)."""
    n = cfg.estimated_parameters()
    if n > MAX_PARAMETERS:
        raise LightftError(f"{source}: the dimensions describe about {n:.3g} parameters (layers {cfg.num_layers}, "
                           f"width {cfg.hidden_size}, vocab {cfg.vocab_size}); more than the {MAX_PARAMETERS:.0e} "
                           "lightft accepts; check the config")
    return cfg


def check_max_length(cfg: ModelConfig, max_length: int, flag: str = "--max-length") -> None:
    """Refuse a sequence length the model cannot position, before any work (not an IndexError mid-fit).

    Learned position tables (BERT, RoBERTa, GPT-2) have a hard end. Rotary models (Llama) can compute
    any position, but were trained up to `max_position_embeddings`; going past it is refused too,
    since quality falls apart there (raise it in config.json, with rope scaling, to mean it).
    """
    limit = cfg.max_tokens() or cfg.max_positions
    if max_length > limit:
        kind = "position embeddings" if cfg.position == "learned" else "max_position_embeddings (rotary)"
        raise LightftError(f"{flag} {max_length} is longer than the model can take: its {kind} allow "
                           f"{limit} tokens; use {flag} {limit} or less")
