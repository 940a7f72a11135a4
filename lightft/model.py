"""One transformer core for every family: embeddings -> N blocks -> final norm -> (pooler | LM head).

Read top to bottom: `Norm`, `Attention`, `MLP`, `Block`, `Transformer`. Everything a family does
differently is a field of `ModelConfig` (post- vs pre-norm, learned vs rotary positions, plain vs
gated MLP, fused q/k/v, GQA, biases). This file knows nothing of checkpoints, LoRA or tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightft.attention import causal_attention
from lightft.config import ModelConfig
from lightft.fused import rms_norm
from lightft.rope import RotaryEmbedding, apply_rotary

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 as Llama does, so bf16 runs match fp32 closely."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)  # hand-written backward: lightft/fused.py


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.hidden_size, cfg.norm_eps)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)


class KVCache:
    """Preallocated keys/values for incremental decoding: one (B, kv_heads, max_len, head_dim) pair per layer."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype):
        shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.length = 0  # number of positions already stored (same for every layer)
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, kv_heads, T_new, head_dim) after the cached ones; return all positions so far."""
        end = self.length + k.shape[2]
        assert end <= self.max_len, "KV cache overflow: raise max_len"
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    """Multi-head (or grouped-query) self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        if cfg.fused_qkv:
            self.qkv_proj = nn.Linear(cfg.hidden_size, q_out + 2 * kv_out, bias=cfg.qkv_bias)
        else:
            self.q_proj = nn.Linear(cfg.hidden_size, q_out, bias=cfg.qkv_bias)
            self.k_proj = nn.Linear(cfg.hidden_size, kv_out, bias=cfg.qkv_bias)
            self.v_proj = nn.Linear(cfg.hidden_size, kv_out, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(q_out, cfg.hidden_size, bias=cfg.out_bias)
        self.fused_qkv = cfg.fused_qkv

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor],
        rope: Optional[tuple[torch.Tensor, torch.Tensor]],
        cache: Optional[KVCache] = None,
        layer: int = 0,
    ) -> torch.Tensor:
        cfg = self.cfg
        B, T, _ = x.shape
        q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        heads = cfg.num_heads + cfg.num_kv_heads
        if self.fused_qkv and rope is not None:  # Llama packed for decoding (lightft/inference.py)
            qkv = self.qkv_proj(x)
            # q and k sit side by side: rotate them in one call. (B, T, (H+KV)*hd) -> (B, H+KV, T, hd)
            qk = apply_rotary(qkv[..., : q_out + kv_out].view(B, T, heads, cfg.head_dim).transpose(1, 2), *rope)
            q, k = qk.split([cfg.num_heads, cfg.num_kv_heads], dim=1)
            v = qkv[..., q_out + kv_out :].view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        else:
            if self.fused_qkv:  # GPT-2's c_attn
                q, k, v = self.qkv_proj(x).split([q_out, kv_out, kv_out], dim=-1)
            else:
                q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
            # (B, T, heads*hd) -> (B, heads, T, hd)
            q = q.view(B, T, cfg.num_heads, cfg.head_dim).transpose(1, 2)
            k = k.view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
            v = v.view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, kv_heads, S, hd) with S = cached + T
        is_causal = mask is None and cfg.causal and q.shape[2] == k.shape[2]  # prefill or training
        dropout = cfg.attention_dropout if self.training else 0.0
        if is_causal:  # bf16 CPU training takes a faster hand-written backward (lightft/attention.py)
            y = causal_attention(q, k, v, dropout)
        elif cfg.causal and mask is not None and q.shape[2] == k.shape[2]:  # packed documents: mask is causal too
            y = causal_attention(q, k, v, dropout, allowed=mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=False,
                                               enable_gqa=cfg.num_kv_heads != cfg.num_heads)
        y = y.transpose(1, 2).reshape(B, T, q_out)  # (B, heads, T, hd) -> (B, T, heads*hd)
        return self.o_proj(y)


class MLP(nn.Module):
    """Plain `down(act(up(x)))` (BERT, GPT-2) or gated `down(act(gate(x)) * up(x))` (Llama)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.mlp == "gated":
            self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.activation]
        self.gated = cfg.mlp == "gated"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated and hasattr(self, "gate_up_proj"):  # gate and up packed into one for decoding
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(self.act(gate) * up)
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    """Attention + MLP with residuals; pre-norm (GPT-2, Llama) or post-norm (BERT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm, self.attn = make_norm(cfg), Attention(cfg)
        self.mlp_norm, self.mlp = make_norm(cfg), MLP(cfg)
        self.pre_norm = cfg.pre_norm
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x, mask, rope, cache=None, layer=0):
        if self.pre_norm:
            x = x + self.dropout(self.attn(self.attn_norm(x), mask, rope, cache, layer))
            return x + self.dropout(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + self.dropout(self.attn(x, mask, rope, cache, layer)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))


@dataclass
class TransformerOutput:
    hidden_states: torch.Tensor  # (B, T, hidden) after the final norm
    logits: Optional[torch.Tensor] = None  # (B, T, vocab) when the LM head ran
    pooled: Optional[torch.Tensor] = None  # (B, hidden) BERT pooler output


class Transformer(nn.Module):
    """Encoder or decoder, chosen by `cfg.causal`; returns hidden states and, if asked, LM logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        if cfg.position == "learned":
            self.embed_positions = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        else:
            self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        if cfg.type_vocab_size:
            self.embed_types = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embed_norm = make_norm(cfg) if cfg.embed_norm else None
        self.embed_dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(cfg) if cfg.final_norm else None
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.pooler else None
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) if cfg.lm_head else None
        self.gradient_checkpointing = False
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the input embedding with the LM head when the config says so (GPT-2, small Llamas)."""
        if self.lm_head is not None and self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def default_position_ids(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], past: int = 0):
        """Positions 0..T-1 (after `past` cached ones); with a padding mask, count only real tokens."""
        B, T = input_ids.shape
        if self.cfg.padding_positions:  # RoBERTa: pad tokens sit at padding_idx, others count from it
            real = input_ids.ne(self.cfg.pad_token_id).long()
            return torch.cumsum(real, dim=1) * real
        if attention_mask is not None and attention_mask.dim() == 2 and self.cfg.causal:
            # left-padded decoder batches: each row's first real token gets position 0
            full = attention_mask.long()
            return (torch.cumsum(full, dim=1) - 1).clamp(min=0)[:, -T:]
        return torch.arange(past, past + T, device=input_ids.device).expand(B, T)

    def build_mask(
        self,
        attention_mask: Optional[torch.Tensor],
        segment_ids: Optional[torch.Tensor],
        T: int,
        S: int,
        device: torch.device,
    ) -> Optional[torch.Tensor]:
        """Boolean (B|1, 1, T, S) mask, True = may attend; None when plain causal/full attention suffices.

        attention_mask (B, S) marks real keys; segment_ids (B, T) keep packed documents apart.
        """
        if attention_mask is None and segment_ids is None and (T == S or T == 1 or not self.cfg.causal):
            return None
        if (self.cfg.causal and segment_ids is None and T == S and attention_mask is not None
                and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())):
            # Right padding under a causal mask: real tokens never see the pads that follow them, so
            # the plain causal kernel gives the same outputs at every real position (pad positions
            # are ignored by every loss and metric) and is much faster than an explicit mask.
            return None
        allowed = torch.ones(1, 1, T, S, dtype=torch.bool, device=device)
        if self.cfg.causal:
            q_pos = torch.arange(S - T, S, device=device)[:, None]
            allowed = allowed & (torch.arange(S, device=device)[None, :] <= q_pos)
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, :S].bool()
        if segment_ids is not None:
            assert T == S, "segment_ids are for training on packed rows, not with a KV cache"
            allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
        if self.cfg.causal:
            # A fully masked row (a left pad looking only at pads) would give NaN: let it see itself.
            diagonal = torch.arange(S - T, S, device=device)[:, None] == torch.arange(S, device=device)[None, :]
            allowed = allowed | diagonal
        return allowed

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        return_logits: bool = True,
    ) -> TransformerOutput:
        """input_ids (B, T); attention_mask (B, S) with S = cached + T; position_ids (B, T)."""
        cfg = self.cfg
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, attention_mask, past)
        x = self.embed_tokens(input_ids)  # (B, T, hidden)
        rope = None
        if cfg.position == "learned":
            x = x + self.embed_positions(position_ids + cfg.position_offset)
        else:
            rope = self.rotary(position_ids, x.dtype)
        if cfg.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.embed_types(token_type_ids)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        x = self.embed_dropout(x)
        mask = self.build_mask(attention_mask, segment_ids, T, past + T, x.device)
        for i, block in enumerate(self.layers):
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, mask, rope, None, i, use_reentrant=False)
            else:
                x = block(x, mask, rope, cache, i)
        if cache is not None:
            cache.length += T
        if self.final_norm is not None:
            x = self.final_norm(x)
        out = TransformerOutput(hidden_states=x)
        if self.pooler is not None:
            out.pooled = torch.tanh(self.pooler(x[:, 0]))
        if self.lm_head is not None and return_logits:
            out.logits = self.lm_head(x)
        return out

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Count each tensor once (tied embeddings are one tensor)."""
        seen, total = set(), 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def reset_buffers(self) -> None:
        """Recreate non-persistent buffers after the model was built on the meta device."""
        if self.cfg.position == "rope":
            self.rotary.reset_parameters()


def init_weights(model: Transformer, std: float = 0.02) -> None:
    """Small normal init for weights built from scratch (tests, random benchmark models)."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
