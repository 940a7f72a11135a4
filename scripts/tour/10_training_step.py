"""Lesson 10: the training step Lightning runs for us, written out by hand; gradient accumulation.

    python scripts/tour/10_training_step.py

`lightft train` hands a LightningModule to a Lightning Trainer. For each optimiser step the Trainer
runs: forward and the task's loss, backward, clipping of the gradient norm (--grad-clip), one
AdamW step, one learning-rate scheduler step (warm-up, then decay), and zeroing the gradients.
Here a tiny classifier trains four steps both ways, by hand and by lightft's own Trainer, and ends
with the same weights. Then gradient accumulation (--grad-accum): two micro-batches of 4 give the
gradient of one batch of 8, exactly when the loss is a mean over examples, and not quite when it
is a mean over tokens of rows of different lengths.
Source: lightft/train/run.py (make_trainer), lightft/tasks/optim.py (build_optimizer, lr_lambda),
lightft/tasks/module.py (TaskModule.training_step), lightft/tasks/causal_lm.py (next_token_nll).
"""

# %% Setup: a tiny BERT classifier and 32 random examples, batches of 4
import copy
import logging
import warnings

import torch
from torch.utils.data import DataLoader

import tourkit
from lightft.data.base import attention_mask_for, pad_sequences
from lightft.options import OptimOptions, Options
from lightft.runs.backbone import prepare_backbone
from lightft.tasks.causal_lm import next_token_nll
from lightft.tasks.classify import ClassificationModule
from lightft.tasks.optim import build_optimizer
from lightft.train.run import make_trainer

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # keep Lightning's start-up notes out of the lesson
warnings.filterwarnings("ignore", module="lightning")
g = torch.Generator().manual_seed(0)
examples = [{"ids": torch.randint(5, 60, (int(torch.randint(4, 12, (), generator=g)),), generator=g).tolist(),
             "label": int(torch.randint(0, 2, (), generator=g))} for _ in range(32)]


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    ids = [e["ids"] for e in batch]
    input_ids = pad_sequences(ids, 0)
    return {"input_ids": input_ids, "attention_mask": attention_mask_for(ids, input_ids.shape[1]),
            "labels": torch.tensor([e["label"] for e in batch])}


def classifier(opts: Options) -> ClassificationModule:
    backbone = prepare_backbone(tourkit.tiny_model("bert"), opts)  # --full: every weight trains
    torch.manual_seed(0)
    return ClassificationModule(backbone, opts, label_names=["neg", "pos"])


opts = Options(lora=False, lr=1e-2, warmup=2, schedule="linear", grad_clip=0.5, weight_decay=0.01, max_steps=4,
               epochs=1, batch_size=4, classifier_dropout=0.0, progress=False, accelerator="cpu", kernels="off",
               precision="32-true")  # fp32 everywhere: --precision auto would pick bf16 autocast on an AMX CPU
module = classifier(opts)
by_hand = copy.deepcopy(module)  # the same starting weights for the hand-written loop

# %% 1. By hand: forward + loss -> backward -> clip -> AdamW -> scheduler -> zero the gradients
setup = build_optimizer(by_hand, OptimOptions.of(opts), opts.resolved_lr(), total_steps=opts.max_steps,
                        head_names={"head"})
optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
params = [p for group in optimizer.param_groups for p in group["params"]]
by_hand.train()
rows = []
for step, batch in zip(range(opts.max_steps), DataLoader(examples, batch_size=4, collate_fn=collate)):
    lr = optimizer.param_groups[0]["lr"]
    loss = by_hand.loss(batch, by_hand(batch))  # cross-entropy of the pooled [CLS] -> linear head
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)  # scale all gradients so their norm <= 0.5
    clipped = torch.sqrt(sum(p.grad.pow(2).sum() for p in params))
    optimizer.step()  # AdamW: Adam's update plus weight decay on matrices
    scheduler.step()  # warm-up for 2 steps, then linear decay to 0 at step 4
    optimizer.zero_grad()
    rows.append((step, f"{float(loss.detach()):.4f}", f"{float(norm):.3f}", f"{float(clipped):.3f}", f"{lr:.4f}"))
tourkit.title("four steps by hand")
tourkit.table(rows, ("step", "loss", "grad norm", "after clipping", "learning rate"))
print(f"AdamW groups: {[(len(gr['params']), gr['weight_decay']) for gr in optimizer.param_groups]} "
      "(tensors, weight decay): no decay on norms, biases and 1-D parameters")

# %% 2. The same four steps through lightft's Trainer (make_trainer: the settings `lightft train` uses)
trainer = make_trainer(opts, None, module.monitor, module.monitor_mode, for_training=False)
trainer.fit(module, train_dataloaders=DataLoader(examples, batch_size=4, collate_fn=collate))
assert trainer.global_step == 4
for (name, p), q in zip(module.named_parameters(), by_hand.parameters()):
    torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
print(f"\nLightning's 4 steps == the hand-written 4 steps: all {sum(1 for _ in module.parameters())} tensors equal")

# %% 3. Gradient accumulation: 2 micro-batches of 4 (each loss / 2) == 1 batch of 8, for a mean over examples
model = classifier(opts)
big = collate(examples[:8])
model.loss(big, model(big)).backward()
one_batch = [p.grad.clone() for p in model.parameters()]
model.zero_grad()
for part in (examples[:4], examples[4:8]):
    micro = collate(part)
    (model.loss(micro, model(micro)) / 2).backward()  # gradients add up in .grad between optimiser steps
for name, a, (_, p) in zip([n for n, _ in model.named_parameters()], one_batch, model.named_parameters()):
    torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-7, msg=name)
print("\nclassification: accumulated gradient of 2 x 4 == gradient of 1 x 8")

steps = {}  # and through the Trainer: --grad-accum 2 with batches of 4, against batches of 8, one optimiser step
for accum, size in ((2, 4), (1, 8)):
    o = Options(**{**opts.to_dict(), "grad_accum": accum, "batch_size": size, "max_steps": 1})
    m = classifier(o)
    make_trainer(o, None, m.monitor, m.monitor_mode, for_training=False).fit(
        m, train_dataloaders=DataLoader(examples[:8], batch_size=size, collate_fn=collate))
    steps[accum] = dict(m.named_parameters())
for name, p in steps[2].items():
    torch.testing.assert_close(p, steps[1][name], rtol=1e-4, atol=1e-6, msg=name)
print("Trainer: --grad-accum 2 --batch-size 4 gives the weights of --batch-size 8 after one step")

# %% 4. The caveat: a causal LM's loss is a mean over tokens, and rows differ in length
lm = tourkit.tiny_model("llama")
rows = [[7, 8, 9, 10, 11, 12, 13, 14], [20, 21, 22], [30, 31, 32, 33, 34, 35], [40, 41]]


def token_mean_loss(part: list[list[int]]) -> torch.Tensor:
    ids = pad_sequences(part, 0)
    labels = pad_sequences(part, -100)
    nll, n = next_token_nll(lm.lm_head, lm(ids, attention_mask=attention_mask_for(part, ids.shape[1])).hidden_states,
                            labels)
    return nll / n  # what the lm / instruct tasks minimise: summed loss over the batch's scored tokens


token_mean_loss(rows).backward()
whole = lm.embed_tokens.weight.grad.clone()
lm.zero_grad()
for part in (rows[:2], rows[2:]):  # 7 + 2 scored tokens in the first micro-batch, 5 + 1 in the second
    (token_mean_loss(part) / 2).backward()
gap = float((lm.embed_tokens.weight.grad - whole).norm() / whole.norm())
print(f"\ncausal LM, micro-batches with 9 and 6 scored tokens: accumulated gradient is {100 * gap:.1f} % away "
      "from the big batch's (each micro-batch's tokens weigh 1/(2 n) instead of 1/15)")
assert gap > 0.01
print("\nLesson 10 done: a training step is five lines; Lightning adds loops, devices, logging and checkpoints.")
