"""Text generation with a KV cache: greedy or sampled (temperature, top-k, top-p), EOS and stop strings, batches.

`generate_ids` is the token-level loop: a left-padded batch, one prefill, then one token per step
through `KVCache` (`use_cache=False` recomputes the whole sequence each step, as a check). With
kernels on, greedy decoding of one prompt checks drafted tokens in the same pass instead
(lightft/kernels/lookup.py): the same tokens in fewer passes.
`generate_text` adds prompts as text, the chat / instruction template and stop strings.
`load_for_generation` opens a base model folder, a merged export or a run folder (its trained backbone),
inference-only, with the kernels asked for (`--kernels auto`: bf16 weights packed for oneDNN on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from lightft.checkpoint import load_model
from lightft.errors import LightftError
from lightft.kernels import enabled as kernels_enabled
from lightft.kernels import use_kernels
from lightft.kernels.lookup import lookup_decode
from lightft.lora import merge_lora
from lightft.model import KVCache, Transformer
from lightft.prompts import format_prompt
from lightft.quant import dequantize_linears
from lightft.runs import load_run
from lightft.runs.folder import is_run_dir
from lightft.task_heads import export_template
from lightft.textfile import read_json_file
from lightft.tokenizer import Tokenizer, load_tokenizer


@dataclass
class SamplingOptions:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: Optional[int] = None
    stop: tuple[str, ...] = ()  # stop strings (the text is cut before them)
    use_cache: bool = True
    lookahead: int = 4  # kernels on, greedy, one prompt: draft up to this many tokens by prompt lookup (0 = off)

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise LightftError("--max-new-tokens must be at least 1")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):  # NaN compares false both ways
            raise LightftError(f"--temperature must be a finite number >= 0 (0: greedy), not {self.temperature}")
        if self.top_k < 0 or not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise LightftError("--top-k must be >= 0 and --top-p in (0, 1]")
        if self.lookahead < 0:
            raise LightftError("--lookahead must be >= 0 (0 turns prompt-lookup drafting off)")


@dataclass
class Generation:
    token_ids: list[int]  # new tokens, without the final EOS
    text: str = ""
    finish_reason: str = "length"  # eos | stop | length
    prompt: str = field(default="", repr=False)


def eos_ids(model: Transformer, tokenizer: Optional[Tokenizer] = None) -> set[int]:
    """Every id that ends generation: config eos (int or list), generation_config.json's, the tokenizer's."""
    ids: set[int] = set()

    def add(value) -> None:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))

    add(model.cfg.eos_token_id)
    gen_cfg = Path(model.source.path) / "generation_config.json" if model.source is not None else None
    if gen_cfg is not None and gen_cfg.is_file():
        try:
            cfg = read_json_file(gen_cfg)
        except LightftError:
            cfg = {}  # a broken optional file only loses an extra stop id
        add(cfg.get("eos_token_id") if isinstance(cfg, dict) else None)
    if tokenizer is not None:
        add(tokenizer.eos_id)
    return ids


def next_token(logits: torch.Tensor, opts: SamplingOptions, generator: Optional[torch.Generator]) -> torch.Tensor:
    """(B, V) last-position logits -> (B,) chosen ids."""
    if opts.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / opts.temperature
    if opts.top_k:
        kth = torch.topk(logits, min(opts.top_k, logits.shape[-1])).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs > opts.top_p  # tokens after the nucleus is already full
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _last_logits(model: Transformer, ids: torch.Tensor, mask: Optional[torch.Tensor],
                 cache: Optional[KVCache]) -> torch.Tensor:
    """Logits of the last position only: the LM head never sees the prompt's other positions."""
    hidden = model(ids, attention_mask=mask, cache=cache, return_logits=False).hidden_states
    return model.lm_head(hidden[:, -1]).float()  # (B, V)


@torch.inference_mode()  # lighter than no_grad: no version counters or view tracking per op
def generate_ids(model: Transformer, prompts: list[list[int]], opts: SamplingOptions, eos: set[int],
                 pad_id: int = 0, decode: Optional[Callable[[list[int]], str]] = None,
                 on_token: Optional[Callable[[int, int], None]] = None) -> list[Generation]:
    """Continue each prompt (token ids); rows are left-padded and decoded together.

    `on_token(row, token)` is called as each new token is accepted (not for EOS), e.g. to stream text.
    """
    opts.check()
    cfg = model.cfg
    if model.lm_head is None or not cfg.causal:
        raise LightftError(f"generation needs a decoder with an LM head; this is a {cfg.family} encoder")
    if any(not p for p in prompts):
        raise LightftError("empty prompt: give at least one token of text")
    device = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    total = P + opts.max_new_tokens
    if cfg.position == "learned" and total > cfg.max_positions:
        raise LightftError(f"prompt ({P} tokens) + --max-new-tokens ({opts.max_new_tokens}) exceed the model's "
                           f"{cfg.max_positions} positions; shorten the prompt or lower --max-new-tokens")
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, P), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):  # left padding: every row's next token is at column P
        ids[i, P - len(p):] = torch.as_tensor(p, device=device)
        mask[i, P - len(p):] = 1
    padded = not bool(mask.all())
    dtype = next(model.parameters()).dtype
    cache = KVCache(cfg, B, total, device, dtype) if opts.use_cache else None
    generator = torch.Generator(device=device).manual_seed(opts.seed) if opts.seed is not None else None
    was_training = model.training
    model.eval()
    logits = _last_logits(model, ids, mask if padded else None, cache)  # prefill: every prompt token at once
    results = [Generation([]) for _ in range(B)]
    done = [False] * B

    def accept(b: int, t: int) -> None:
        """Append token t to row b, or finish the row on EOS / a stop string / the length limit."""
        if t in eos:
            done[b], results[b].finish_reason = True, "eos"
            return
        results[b].token_ids.append(t)
        if on_token is not None:
            on_token(b, t)
        if opts.stop and decode is not None and any(s in decode(results[b].token_ids) for s in opts.stop):
            done[b], results[b].finish_reason = True, "stop"
        elif len(results[b].token_ids) == opts.max_new_tokens:
            done[b] = True

    drafting = (kernels_enabled(model) and B == 1 and opts.temperature <= 0 and cache is not None
                and opts.lookahead > 0)
    if not drafting:  # the plain loop: choose a token per row, feed it, read the next logits
        seq = ids
        while True:
            chosen = next_token(logits, opts, generator)  # (B,)
            for b, t in enumerate(chosen.tolist()):
                if not done[b]:
                    accept(b, t)
            if all(done):
                break
            step_ids = chosen[:, None]  # (B, 1); finished rows keep decoding, their output is ignored
            if padded:
                mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, S + 1)
            if cache is not None:
                logits = _last_logits(model, step_ids, mask if padded else None, cache)
            else:
                seq = torch.cat([seq, step_ids], dim=1)
                logits = _last_logits(model, seq, mask if padded else None, None)
    else:  # kernels on: the same greedy tokens, drafts checked in the same pass (lightft/kernels/lookup.py)
        lookup_decode(model, prompts[0], int(logits.argmax(-1)), cache, opts.lookahead, accept, done)
    model.train(was_training)
    return results


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cuts = [text.index(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def render_prompt(tokenizer: Tokenizer, prompt: str, template: Optional[str]) -> str:
    """template None = the raw prompt; 'chat', 'alpaca' or a custom text = the instruction format."""
    if template is None:
        return prompt
    return format_prompt(tokenizer, template, prompt)


def generate_text(model: Transformer, tokenizer: Tokenizer, prompts: list[str], opts: SamplingOptions,
                  template: Optional[str] = None, batch_size: int = 8,
                  on_token: Optional[Callable[[int, int], None]] = None) -> list[Generation]:
    """Generate for text prompts in batches; special tokens are skipped in the returned text.

    `on_token(prompt index, token)` is called as each new token is accepted (see `generate_ids`).
    """
    eos = eos_ids(model, tokenizer)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else (min(eos) if eos else 0)
    decode = lambda ids: tokenizer.decode(ids)  # noqa: E731
    out: list[Generation] = []
    for start in range(0, len(prompts), batch_size):
        texts = [render_prompt(tokenizer, p, template) for p in prompts[start : start + batch_size]]
        ids = []
        for t in texts:
            has_bos = bool(tokenizer.bos_token) and t.startswith(tokenizer.bos_token)
            ids.append(tokenizer.encode(t, add_special_tokens=not has_bos))
        row_token = None if on_token is None else (lambda b, t, first=start: on_token(first + b, t))
        for text, gen in zip(texts, generate_ids(model, ids, opts, eos, pad, decode, row_token)):
            gen.prompt = text
            gen.text = cut_at_stop(tokenizer.decode(gen.token_ids), opts.stop)
            out.append(gen)
    return out


def load_for_generation(path: str, dtype: str = "float32", chat: Optional[bool] = None, kernels: str = "auto"
                        ) -> tuple[Transformer, Tokenizer, Optional[str]]:
    """(model, tokenizer, template) for a model folder, a merged export or a run folder.

    The template is the one an instruct run was trained with (read from the run, or from the
    lightft_task.json of its export); otherwise the model's chat template
    when it has one and `chat` is not False, else None (raw text). `kernels`: see lightft.kernels.
    """
    template = None
    if is_run_dir(path):
        run = load_run(path, {"kernels": kernels}, dtype=dtype)
        # fold LoRA updates into the weights: same outputs, one matmul per layer while decoding; a QLoRA
        # run's 4-bit layers without LoRA are dequantised too (decoding runs in full precision)
        model, tokenizer = merge_lora(run.backbone), load_tokenizer(run.base_model)
        dequantize_linears(model)
        template = run.task_state.get("template")
    else:
        model, tokenizer = load_model(path, dtype=dtype), load_tokenizer(path)
        template = export_template(path)  # a merged export of an instruct run: the run's template
    use_kernels(model, kernels, inference=True)  # auto, bf16 on CPU: weights packed for oneDNN, ~1.6x faster decoding
    if chat is False:
        template = None
    elif template is None and tokenizer.chat_template and chat is not False:
        template = "chat"
    elif chat is True and template is None:
        raise LightftError(f"--chat: {path} has no chat template; drop --chat")
    return model.eval(), tokenizer, template
