"""`lightft generate`: text from a base model, a merged export or a run folder (greedy or sampled, KV cache).

One prompt is streamed to stdout as its tokens come; several are printed when done. Either way a
last line on stderr gives the new tokens and tokens/s.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Optional

import click

from lightft.cli.options import option_decorators
from lightft.cli.common import resolve_model, threads_option


@click.command("generate")
@click.option("--model", required=True, help="Model folder (HF layout / merged export), run folder, or a model "
              "name (`lightft models`).")
@click.option("--prompt", "prompts", multiple=True, help="Prompt text (repeat for a batch).")
@click.option("--prompts-file", type=click.Path(dir_okay=False), help="One prompt per line.")
@click.option("--max-new-tokens", default=128, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--top-k", default=0, show_default=True, type=int, help="Sample among the k likeliest (0 = off).")
@click.option("--top-p", default=1.0, show_default=True, type=float, help="Nucleus sampling mass (1 = off).")
@click.option("--seed", default=None, type=int, help="Seed for sampling.")
@click.option("--stop", multiple=True, help="Stop string (repeatable); the text is cut before it.")
@click.option("--lookahead", default=4, show_default=True, type=int,
              help="Greedy, one prompt at a time, kernels on: check up to N tokens drafted from earlier text in "
                   "each pass (prompt lookup; same output, fewer passes). 0 = off.")
@click.option("--chat/--no-chat", default=None,
              help="Wrap prompts in the chat template (default: when the model has one, or the run's template).")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--dtype", default="float32", show_default=True)
@threads_option
@option_decorators(["kernels"])
@click.option("--jsonl", is_flag=True, help="Print one JSON object per prompt (prompt, text, finish_reason).")
def command(model: str, prompts: tuple[str, ...], prompts_file: Optional[str], max_new_tokens: int,
            temperature: float, top_k: int, top_p: float, seed: Optional[int], stop: tuple[str, ...], lookahead: int,
            chat: Optional[bool], batch_size: int, dtype: str, kernels: Optional[str], jsonl: bool) -> None:
    """Continue PROMPT(s) with MODEL.

    \b
    Examples:
      lightft generate --model smollm2 --prompt "Name three primary colours."
      lightft generate --model runs/alpaca --prompt "Give two tips for sleep." --max-new-tokens 64
      lightft generate --model smollm2 --no-chat --prompt "Once upon a time" --temperature 0.8 --top-p 0.9 --seed 1
    """
    from lightft.errors import LightftError
    from lightft.generate import SamplingOptions, generate_text, load_for_generation
    from lightft.data.readers import read_text

    texts = list(prompts)
    if prompts_file:
        texts += [line for line in read_text(prompts_file).splitlines() if line.strip()]
    if not texts:
        raise LightftError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    opts = SamplingOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=seed, stop=stop, lookahead=lookahead)
    opts.check()
    lm, tokenizer, template = load_for_generation(resolve_model(model), dtype, chat, kernels or "auto")
    stream = Stream(tokenizer.decode, stop) if len(texts) == 1 and not jsonl else None
    start = time.perf_counter()
    results = generate_text(lm, tokenizer, texts, opts, template, batch_size, stream.token if stream else None)
    seconds = time.perf_counter() - start
    for prompt, gen in zip(texts, results):
        if jsonl:
            click.echo(json.dumps({"prompt": prompt, "text": gen.text, "finish_reason": gen.finish_reason,
                                   "new_tokens": len(gen.token_ids)}, ensure_ascii=False))
        elif stream is not None:
            stream.finish(gen.text)
        else:
            click.echo(gen.text)
    new = sum(len(gen.token_ids) for gen in results)
    click.echo(f"[generate] {new} new tokens in {seconds:.1f} s ({new / max(seconds, 1e-9):.1f} tokens/s)", err=True)


class Stream:
    """Prints one generation as its tokens arrive, holding back what may still change: an incomplete
    character (a byte-level token that ends mid-UTF-8) and a tail that may be the start of a --stop string."""

    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...]):
        self.decode, self.stop = decode, stop
        self.ids: list[int] = []
        self.shown = ""

    def token(self, row: int, token: int) -> None:
        self.ids.append(token)
        text = self.decode(self.ids).rstrip("\ufffd")
        cut = min([text.index(s) for s in self.stop if s in text] + [len(text)])
        held = max([k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])] + [0])
        self._show(text[:min(cut, len(text) - held)])

    def finish(self, text: str) -> None:
        """The final text (cut at a stop string): print what is left of it and end the line."""
        if not self._show(text):  # decoding more tokens changed earlier text (rare): print it whole
            click.echo(f"\n{text}", nl=False)
        click.echo("")

    def _show(self, text: str) -> bool:
        if not text.startswith(self.shown):
            return False
        click.echo(text[len(self.shown):], nl=False)
        self.shown = text
        return True
