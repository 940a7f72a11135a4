"""Lesson 2: one transformer block by hand, compared with lightft/model.py.

    python scripts/tour/02_transformer_block.py

A Llama-family block on a tiny random model: RMSNorm, the q/k/v projections split into heads,
RoPE's rotation, causal and padding masks (printed as 0/1 matrices), softmax attention with
grouped-query heads, the residual, the gated (SwiGLU) MLP. Every step is computed with plain
tensor operations and checked against the module that does it in lightft.
Source: lightft/model.py (RMSNorm, Attention, MLP, Block, Transformer.build_mask),
lightft/rope.py (RotaryEmbedding, apply_rotary).
"""

# %% Setup: a tiny Llama (16 wide, 4 query heads and 2 key/value heads of 4 dims) and an input
import math

import torch
import torch.nn.functional as F

import tourkit
from lightft.rope import apply_rotary

torch.set_grad_enabled(False)  # nothing trains in this lesson
model = tourkit.tiny_model("llama", std=0.3)  # larger weights than a fresh model: attention far from uniform
cfg, block = model.cfg, model.layers[0]
H, KV, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
print(f"hidden {cfg.hidden_size}, heads {H}, kv heads {KV}, head dim {hd}, MLP {cfg.intermediate_size}")
B, T = 2, 5
torch.manual_seed(1)
x = torch.randn(B, T, cfg.hidden_size)  # what the embeddings (or the previous block) hand over
positions = torch.arange(T).expand(B, T)  # (B, T)

# %% 1. Masks as 0/1 matrices (row = query position, column = key position; 1 = may attend)
tourkit.title("causal mask: a token sees itself and the past")
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
print(tourkit.zero_one(causal))

tourkit.title("decoder, row 2 left-padded (two pads, then three tokens): causal AND real keys")
attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
mask = model.build_mask(attention_mask, None, T, T, x.device)  # (B, 1, T, T), what the model passes down
print(tourkit.zero_one(mask[1, 0]))
by_hand = causal & attention_mask[:, None, None, :].bool()
by_hand |= torch.eye(T, dtype=torch.bool)  # a pad row that sees nothing would give NaN: it sees itself
torch.testing.assert_close(mask, by_hand)
print("(the pads' rows only see themselves; no loss or metric ever reads them)")

tourkit.title("encoder (BERT), 3 real tokens + 2 pads: every query sees every real key, both directions")
bert = tourkit.tiny_model("bert")
enc_mask = bert.build_mask(torch.tensor([[1, 1, 1, 0, 0]]), None, T, T, x.device)
print(tourkit.zero_one(enc_mask.expand(1, 1, T, T)[0, 0]))
torch.testing.assert_close(enc_mask.expand(1, 1, T, T)[0, 0], torch.tensor([1, 1, 1, 0, 0]).bool().expand(T, T))

# %% 2. RMSNorm: divide each vector by its root-mean-square, then scale per channel
h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * block.attn_norm.weight
torch.testing.assert_close(h, block.attn_norm(x))
print(f"\nRMSNorm: rms of x[0, 0] = {x[0, 0].pow(2).mean().sqrt():.3f}; after the norm (before the weight) it is 1")

# %% 3. q, k, v: three linear maps, then (B, T, heads * hd) -> (B, heads, T, hd)
attn = block.attn
q = (h @ attn.q_proj.weight.T).view(B, T, H, hd).transpose(1, 2)  # (B, 4, T, 4)
k = (h @ attn.k_proj.weight.T).view(B, T, KV, hd).transpose(1, 2)  # (B, 2, T, 4): fewer key/value heads (GQA)
v = (h @ attn.v_proj.weight.T).view(B, T, KV, hd).transpose(1, 2)
tourkit.show("q[0, head 0]  (T, hd)", q[0, 0])

# %% 4. RoPE: rotate each pair (x_i, x_{i + hd/2}) by the angle position * frequency_i
tourkit.title("RoPE angles (position x frequency), radians")
inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)  # (hd/2,): one frequency per pair
angles = positions[..., None].float() * inv_freq  # (B, T, hd/2)
tourkit.table([(p, *[f"{a:.3f}" for a in angles[0, p].tolist()]) for p in range(T)],
              ("position", *[f"pair {i} (freq {f:.3g})" for i, f in enumerate(inv_freq.tolist())]))
cos, sin = angles.cos()[:, None], angles.sin()[:, None]  # (B, 1, T, hd/2), shared by all heads


def rotate(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = t[..., : hd // 2], t[..., hd // 2 :]  # the pairs are (first[i], second[i])
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


q_rot, k_rot = rotate(q, cos, sin), rotate(k, cos, sin)
lightft_cos, lightft_sin = model.rotary(positions, x.dtype)
torch.testing.assert_close((lightft_cos, lightft_sin), (cos, sin))
torch.testing.assert_close(apply_rotary(q, lightft_cos, lightft_sin), q_rot)
torch.testing.assert_close(apply_rotary(k, lightft_cos, lightft_sin), k_rot)
# Why rotate: q·k then depends on the distance between positions only. The same vectors placed at
# positions (3, 1) and at (4, 2) score the same; at (4, 1) they do not.
qv, kv_ = q[0, 0, 0], k[0, 0, 0]


def at(vec: torch.Tensor, position: int) -> torch.Tensor:
    """A head vector rotated as if it sat at `position`."""
    a = position * inv_freq
    return rotate(vec, a.cos(), a.sin())


def score(m: int, n: int) -> float:
    return float(at(qv, m) @ at(kv_, n))  # q at position m, k at position n


print(f"\nq.k with q at 3, k at 1: {score(3, 1):.5f}; at 4 and 2: {score(4, 2):.5f}; at 4 and 1: {score(4, 1):.5f}")
assert math.isclose(score(3, 1), score(4, 2), rel_tol=1e-5) and not math.isclose(score(3, 1), score(4, 1), rel_tol=1e-3)

# %% 5. Attention: softmax(q kᵀ / sqrt(hd)) under the mask, times v; each k/v head serves 2 query heads


def attention_by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)  # (B, H, T, hd)
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # (B, H, T, T)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    if allowed is causal:
        tourkit.show("attention weights, row 0, head 0 (each row sums to 1, zeros above the diagonal)", weights[0, 0])
    out = (weights @ v).transpose(1, 2).reshape(B, T, H * hd)  # (B, H, T, hd) -> (B, T, H * hd)
    return out @ attn.o_proj.weight.T


a = attention_by_hand(q_rot, k_rot, v, causal)
torch.testing.assert_close(a, attn(h, None, (lightft_cos, lightft_sin)), rtol=1e-5, atol=1e-6)
a_padded = attention_by_hand(q_rot, k_rot, v, mask)  # the same, with row 1's two left pads masked out
torch.testing.assert_close(a_padded, attn(h, mask, (lightft_cos, lightft_sin)), rtol=1e-5, atol=1e-6)

# %% 6. Residual, RMSNorm again, the gated MLP: down(silu(gate(h)) * up(h)), residual
x1 = x + a
h2 = x1 * torch.rsqrt(x1.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * block.mlp_norm.weight
mlp = block.mlp
y = x1 + (F.silu(h2 @ mlp.gate_proj.weight.T) * (h2 @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
tourkit.show("\nblock output y[0, :, :6]  (B, T, hidden), first 6 channels", y[0, :, :6])
torch.testing.assert_close(y, block(x, None, (lightft_cos, lightft_sin)), rtol=1e-5, atol=1e-6)
print("the hand-written block equals lightft's Block")

# %% 7. The whole model is embeddings -> blocks -> final norm -> LM head
ids = torch.tensor([[5, 9, 2, 33, 17]])
z = model.embed_tokens(ids)
rope = model.rotary(torch.arange(5)[None], z.dtype)
for layer in model.layers:
    z = layer(z, None, rope)
logits = model.final_norm(z) @ model.lm_head.weight.T  # (1, T, vocab): a score for every next token
torch.testing.assert_close(logits, model(ids).logits, rtol=1e-5, atol=1e-6)
print(f"logits {tuple(logits.shape)}: one score per vocabulary entry at each position; model(ids) gives the same")
print("\nLesson 2 done: a block is two residual branches (attention, MLP), each behind a norm.")
