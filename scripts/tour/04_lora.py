"""Lesson 4: LoRA, a low-rank update ΔW = (α/r)·B·A beside a frozen weight.

    python scripts/tour/04_lora.py

What you will see: A and B of one layer and why B starts at zero, the layer's output by hand,
merging ΔW into W (same outputs, no extra cost), how few parameters LoRA trains on a whole model,
and a small fitting experiment: how well a rank-r update can match a target change of rank 4,
against the best any rank-r matrix can do (the SVD bound).
Source: lightft/lora/layer.py (LoRALinear), lightft/lora/apply.py (apply_lora, merge_lora,
mark_trainable).
"""

# %% Setup: one linear layer, in = 8, out = 6, wrapped with LoRA r = 2, alpha = 4
import torch
from torch import nn

import tourkit
from lightft.lora import LoRALinear, apply_lora, lora_layers, merge_lora, unmerge_lora

torch.manual_seed(0)
base = nn.Linear(8, 6)
W, b = base.weight.detach().clone(), base.bias.detach().clone()
layer = LoRALinear(base, r=2, alpha=4.0)
print(f"scaling = alpha / r = {layer.scaling}")
tourkit.show("A  (r, in): Kaiming-uniform, like nn.Linear's own weight", layer.lora_A.detach())
tourkit.show("B  (out, r): zeros", layer.lora_B.detach())

# %% 1. At the start ΔW = 0: the wrapped model is exactly the base model, so training starts from it
x = torch.randn(3, 8)
with torch.no_grad():
    torch.testing.assert_close(layer(x), base(x))
    torch.testing.assert_close(layer(x), x @ W.T + b)
print("\nB = 0, so ΔW = 0 and the LoRA layer outputs what the base layer outputs")
# (A random and B zero, not both zero: with both zero no gradient would ever reach either.)

# %% 2. Pretend training moved B; the output by hand is x Wᵀ + b + (α/r) (x Aᵀ) Bᵀ
with torch.no_grad():
    layer.lora_B.copy_(torch.randn(6, 2) * 0.5)
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    delta = layer.scaling * B @ A  # (6, 8) but only rank 2
    tourkit.show("ΔW = (α/r)·B·A  (out, in)", delta)
    print(f"rank of ΔW: {int(torch.linalg.matrix_rank(delta))}")
    torch.testing.assert_close(layer.delta_weight(), delta)
    by_hand = x @ W.T + b + layer.scaling * (x @ A.T) @ B.T  # never forms ΔW: two thin matmuls
    torch.testing.assert_close(layer(x), by_hand)

# %% 3. Merge: W <- W + ΔW. Same outputs, now one plain matmul; unmerge takes it back out
with torch.no_grad():
    before = layer(x)
    layer.merge()
    torch.testing.assert_close(layer.weight, W + delta)
    torch.testing.assert_close(layer(x), before)
    layer.unmerge()
    torch.testing.assert_close(layer.weight, W)
print("merged output == unmerged output; unmerge restores W")

# %% 4. On a whole model: what LoRA on q and v trains, counted by hand
model = tourkit.tiny_model("llama")
total = model.num_parameters()
wrapped = apply_lora(model, targets="q,v", r=4, alpha=8)
trainable = model.num_parameters(trainable_only=True)
tourkit.title("apply_lora(model, 'q,v', r=4)")
rows, by_hand = [], 0
for name, lora in lora_layers(model):
    n = lora.r * (lora.in_features + lora.out_features)  # A: r x in, B: out x r
    by_hand += n
    rows.append((name, f"({lora.out_features}, {lora.in_features})", n))
tourkit.table(rows, ("wrapped layer", "W (out, in)", "trainable r*(in+out)"))
print(f"trainable {trainable} of {total + trainable} parameters ({100 * trainable / (total + trainable):.2f} %); "
      f"frozen: everything else")
assert trainable == by_hand and wrapped == [name for name, _ in lora_layers(model)]
ids = torch.tensor([[3, 14, 15, 9, 26]])
with torch.no_grad():
    for _, lora in lora_layers(model):
        lora.lora_B.normal_(std=0.1)
    unmerged = model(ids).logits
    merge_lora(model)
    torch.testing.assert_close(model(ids).logits, unmerged, rtol=1e-5, atol=1e-5)
    unmerge_lora(model)
print("whole model: merged logits == unmerged logits")

# %% 5. Rank vs what it can express: fit a rank-4 change of a 16 x 16 weight with LoRA of rank 1, 2, 4, 8
tourkit.title("fitting a target ΔW* of rank 4 with LoRA of rank r (Adam, 400 steps)")
torch.manual_seed(1)
target = torch.randn(16, 4) @ torch.randn(4, 16) / 4  # the change a fine-tune 'wants', rank 4
inputs = torch.randn(256, 16)
singular = torch.linalg.svdvals(target)
rows = []
for r in (1, 2, 4, 8):
    torch.manual_seed(2)
    fit = LoRALinear(nn.Linear(16, 16, bias=False), r=r, alpha=float(r))  # scaling 1
    with torch.no_grad():
        fit.weight.zero_()  # base W = 0, so the layer's output is ΔW x alone
        fit.lora_B.normal_(std=0.01)  # start off zero so both factors move from the first step
    opt = torch.optim.Adam([fit.lora_A, fit.lora_B], lr=0.02)
    for _ in range(400):
        loss = (fit(inputs) - inputs @ target.T).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    error = float((fit.delta_weight().detach() - target).norm() / target.norm())
    best = float(singular[r:].pow(2).sum().sqrt() / target.norm())  # Eckart-Young: the best rank-r matrix
    rows.append((r, f"{error:.4f}", f"{best:.4f}"))
    assert error >= best - 1e-3  # no rank-r update beats the SVD bound ...
    assert error <= best + 0.05  # ... and gradient descent gets close to it
tourkit.table(rows, ("rank r", "relative error of ΔW", "best possible at rank r (SVD)"))
print("rank >= 4 matches the target; below it the error is what the missing singular values carry")
print("\nLesson 4 done: LoRA trains r*(in+out) numbers per layer and merges away at inference.")
