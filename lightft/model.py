"""One transformer core for every family: embeddings -> N blocks -> final norm -> (pooler | LM head).

Read top to bottom: the reference math (`rms_norm`, `sdpa_attention`, `build_mask`) and the `Ops`
that hold it, then `RMSNorm`, `Attention`, `MLP`, `Block`, `Transformer`. Everything a family does
differently is a field of `ModelConfig` (post- vs pre-norm, learned vs rotary positions, plain vs
gated MLP, fused q/k/v, GQA, biases). This file knows nothing of checkpoints, LoRA, tasks or
kernels: faster equals of its math (lightft/kernels/) are installed from the outside, by swapping
the functions a model's `Ops` holds (`lightft.kernels.use_kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightft.config import ModelConfig
from lightft.rope import RotaryEmbedding, apply_rotary
from lightft.source import ModelSource

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) · weight, the statistics in fp32 and the result cast back as Llama does (bf16 runs
    then match fp32 closely)."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                   dropout: float, causal: bool) -> torch.Tensor:
    """Softmax attention of q (B, H, T, hd) over k, v (B, KV, S, hd), KV dividing H (grouped-query).

    `mask` (B | 1, 1, T, S), True = may attend, already holds every rule (causal, padding, packed
    documents); None means every key, or only the keys up to each query when `causal` and T == S.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                          is_causal=causal and mask is None and q.shape[2] == k.shape[2],
                                          enable_gqa=k.shape[1] != q.shape[1])


def build_mask(cfg: ModelConfig, attention_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor],
               T: int, S: int, device: torch.device) -> Optional[torch.Tensor]:
    """Boolean (B|1, 1, T, S) mask, True = may attend; None when plain causal/full attention suffices.

    attention_mask (B, S) marks real keys; segment_ids (B, T) keep packed documents apart.
    """
    if attention_mask is None and segment_ids is None and (T == S or T == 1 or not cfg.causal):
        return None
    allowed = torch.ones(1, 1, T, S, dtype=torch.bool, device=device)
    if cfg.causal:
        q_pos = torch.arange(S - T, S, device=device)[:, None]
        allowed = allowed & (torch.arange(S, device=device)[None, :] <= q_pos)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :S].bool()
    if segment_ids is not None:
        assert T == S, "segment_ids are for training on packed rows, not with a KV cache"
        allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    if cfg.causal:
        # A fully masked row (a left pad looking only at pads) would give NaN: let it see itself.
        diagonal = torch.arange(S - T, S, device=device)[:, None] == torch.arange(S, device=device)[None, :]
        allowed = allowed | diagonal
    return allowed


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each element with probability p while training and scale the rest by 1 / (1 - p) (torch's dropout)."""
    return F.dropout(x, p, training)


@dataclass
class Ops:
    """The math a kernel may replace, one object shared by every module of a model (`model.ops`).

    The defaults are the reference functions above (and RoPE's in lightft/rope.py). A module calls
    `self.ops.attend(...)`, never a particular implementation; `lightft.kernels.use_kernels(model)`
    swaps in functions that compute the same values faster where they apply, and sets `kernels`.
    """

    norm: Callable[..., torch.Tensor] = rms_norm  # (x, weight, eps) -> RMSNorm(x)
    rotate: Callable[..., torch.Tensor] = apply_rotary  # (x, cos, sin) -> x rotated by RoPE
    attend: Callable[..., torch.Tensor] = sdpa_attention  # (q, k, v, mask, dropout, causal) -> (B, H, T, hd)
    mask: Callable[..., Optional[torch.Tensor]] = build_mask  # (cfg, attention_mask, segment_ids, T, S, device)
    drop: Callable[..., torch.Tensor] = dropout  # (x, p, training) -> x, elements zeroed at rate p, rest scaled
    kernels: str = "off"  # which functions these are: "off" = the references, "auto" = lightft.kernels


class Dropout(nn.Module):
    """`ops.drop` as a module, for dropout that lives outside the blocks (LoRA's input dropout), so the
    kernels switch reaches it as it reaches the blocks' own dropout."""

    def __init__(self, p: float, ops: Optional[Ops] = None):
        super().__init__()
        self.p, self.ops = p, ops or Ops()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.drop(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RMSNorm(nn.Module):
    """x / rms(x) * weight (`rms_norm`), the Llama family's norm."""

    def __init__(self, dim: int, eps: float, ops: Optional[Ops] = None):
        super().__init__()
        self.eps, self.ops = eps, ops or Ops()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.norm(x, self.weight, self.eps)


def make_norm(cfg: ModelConfig, ops: Ops) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.hidden_size, cfg.norm_eps, ops)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)


class StackedLinear(nn.Module):
    """Linear layers that read the same input, computed as one matmul: their outputs side by side, in order.

    The stacked weight and bias are buffers outside the state dict; each part keeps its parameters,
    re-pointed to views of them, so nothing is stored twice and the state dict does not change.
    Inference only: the parts must compute plain x Wᵀ + b (merge LoRA first), and moving the model
    to another device or dtype afterwards copies the views apart.
    """

    def __init__(self, *parts: nn.Linear):
        super().__init__()
        weight = torch.cat([p.weight.detach() for p in parts])  # (sum of outs, in)
        bias = None
        if any(p.bias is not None for p in parts):
            bias = torch.cat([p.bias.detach() if p.bias is not None else p.weight.new_zeros(p.out_features)
                              for p in parts])
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        start = 0
        for p in parts:
            end = start + p.out_features
            p.weight = nn.Parameter(weight[start:end], requires_grad=p.weight.requires_grad)
            if p.bias is not None:
                p.bias = nn.Parameter(bias[start:end], requires_grad=p.bias.requires_grad)
            start = end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


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
    """Multi-head (or grouped-query) self-attention: project to q, k, v; rotate (RoPE); attend; project back."""

    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.cfg, self.ops = cfg, ops
        q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        if cfg.fused_qkv:  # GPT-2's checkpoints hold q, k and v as one matrix (`c_attn`)
            self.qkv_proj: Optional[nn.Module] = nn.Linear(cfg.hidden_size, q_out + 2 * kv_out, bias=cfg.qkv_bias)
        else:
            self.q_proj = nn.Linear(cfg.hidden_size, q_out, bias=cfg.qkv_bias)
            self.k_proj = nn.Linear(cfg.hidden_size, kv_out, bias=cfg.qkv_bias)
            self.v_proj = nn.Linear(cfg.hidden_size, kv_out, bias=cfg.qkv_bias)
            self.qkv_proj = None  # until `fuse_qkv`
        self.o_proj = nn.Linear(q_out, cfg.hidden_size, bias=cfg.out_bias)

    def fuse_qkv(self) -> None:
        """Compute q, k and v with one matmul from now on: decoding then makes one call, not three.

        Stacks the three weights into `qkv_proj` (a `StackedLinear`); q_proj, k_proj and v_proj
        stay, viewing the stacked weight, so outputs, parameters, state dict and `cfg` are unchanged.
        """
        if self.qkv_proj is None:
            self.qkv_proj = StackedLinear(self.q_proj, self.k_proj, self.v_proj)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, hidden) -> q (B, T, heads·hd), k and v (B, T, kv_heads·hd)."""
        if self.qkv_proj is not None:
            kv_out = self.cfg.num_kv_heads * self.cfg.head_dim
            return self.qkv_proj(x).split([self.cfg.num_heads * self.cfg.head_dim, kv_out, kv_out], dim=-1)
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

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
        q, k, v = self.project(x)
        # (B, T, heads*hd) -> (B, heads, T, hd)
        q = q.view(B, T, cfg.num_heads, cfg.head_dim).transpose(1, 2)
        k = k.view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = v.view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = self.ops.rotate(q, *rope), self.ops.rotate(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, kv_heads, S, hd) with S = cached + T
        dropout = cfg.attention_dropout if self.training else 0.0
        y = self.ops.attend(q, k, v, mask, dropout, cfg.causal)  # (B, heads, T, hd)
        y = y.transpose(1, 2).reshape(B, T, cfg.num_heads * cfg.head_dim)  # -> (B, T, heads*hd)
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
        self.gate_up_proj: Optional[nn.Module] = None  # until `fuse_gate_up`

    def fuse_gate_up(self) -> None:
        """Gated MLPs: compute gate and up with one matmul from now on (as `Attention.fuse_qkv`)."""
        if self.gated and self.gate_up_proj is None:
            self.gate_up_proj = StackedLinear(self.gate_proj, self.up_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return self.down_proj(self.act(self.up_proj(x)))
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, T, 2·inter) -> 2 x (B, T, inter)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self.act(gate) * up)


class Block(nn.Module):
    """Attention + MLP with residuals; pre-norm (GPT-2, Llama) or post-norm (BERT)."""

    def __init__(self, cfg: ModelConfig, ops: Ops):
        super().__init__()
        self.attn_norm, self.attn = make_norm(cfg, ops), Attention(cfg, ops)
        self.mlp_norm, self.mlp = make_norm(cfg, ops), MLP(cfg)
        self.pre_norm, self.p_drop, self.ops = cfg.pre_norm, cfg.hidden_dropout, ops

    def dropout(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.drop(x, self.p_drop, self.training)

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
        self.ops = Ops()  # the replaceable math, shared by every module below (see `Ops`)
        self.source: Optional[ModelSource] = None  # the checkpoint folder it came from (checkpoint.load_model)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        if cfg.position == "learned":
            self.embed_positions = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        else:
            self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        if cfg.type_vocab_size:
            self.embed_types = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.embed_norm = make_norm(cfg, self.ops) if cfg.embed_norm else None
        self.layers = nn.ModuleList(Block(cfg, self.ops) for _ in range(cfg.num_layers))
        self.final_norm = make_norm(cfg, self.ops) if cfg.final_norm else None
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

    def build_mask(self, attention_mask: Optional[torch.Tensor], segment_ids: Optional[torch.Tensor], T: int,
                   S: int, device: torch.device) -> Optional[torch.Tensor]:
        """The attention mask for T queries over S keys (`build_mask`, or a kernel's equal: `Ops.mask`)."""
        return self.ops.mask(self.cfg, attention_mask, segment_ids, T, S, device)

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
        x = self.ops.drop(x, cfg.hidden_dropout, self.training)
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


def init_random_weights(model: Transformer, std: float = 0.02) -> None:
    """Random weights for a model built from scratch (tests, random benchmark models): small normal
    linear and embedding weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
