"""The family-agnostic description of a transformer that `lightft.model` builds.

Each family reader in `lightft.families` turns a Hugging Face `config.json` into this dataclass;
the model core only ever looks at these fields, so a new family costs a reader and a key map,
not a new model file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional


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
