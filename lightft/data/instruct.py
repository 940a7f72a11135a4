"""Instruction data (`instruct`): Alpaca JSON / JSONL {"instruction","input","output"} and chat JSONL {"messages"}.

Each example becomes segments of text, prompt or response; prompt tokens get label -100 (loss on
responses only, unless --train-on-inputs) and every response ends with EOS, so a tuned model learns
to stop. The prompt comes from Alpaca's template, a custom one (--template with {instruction} and
{input}), or the model's own chat template (rendered turn by turn in the tokenizer's sandbox).
Examples over --max-length go through `handle_overlong` (counted, reported); records with an empty
response are skipped and reported with file and line; packing is optional.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from lightft.data.cache import Example
from lightft.data.lm import LMDataModule, eos_id_of
from lightft.data.packing import causal_example
from lightft.data.readers import read_records, require_field
from lightft.errors import LightftError, escape_for_terminal
from lightft.prompts import prompt_for, resolve_template, user_text
from lightft.tokenizer import Tokenizer

Segments = list[tuple[str, bool]]  # (text, is_response)


class EmptyResponse(LightftError):
    """A record whose response is empty: skipped, counted and reported with its file and line (real
    Alpaca has a few), unlike malformed records, which stop the run."""


def chat_segments(tokenizer: Tokenizer, messages: list[dict[str, str]], where: str) -> Segments:
    """Render messages with the chat template turn by turn; each assistant content is a response segment.

    The template's end-of-turn marker right after a response is dropped when it is the EOS token
    (EOS is appended to every response anyway); other template text counts as prompt.
    """
    segments: Segments = []
    rendered = ""
    eos_text = tokenizer.eos_token or ""
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[: i + 1], add_generation_prompt=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise LightftError(f"{where}: the chat template does not render turns incrementally; "
                               "use --template alpaca")
        delta = full[len(prompt):]
        content = msg["content"]
        at = delta.find(content)
        if at < 0:
            content = content.strip()
            at = delta.find(content)
        if at < 0 or not content:
            raise LightftError(f"{where}: the chat template changed the assistant text; use --template alpaca")
        segments.append((prompt[len(rendered):] + delta[:at], False))
        segments.append((content, True))
        rendered = prompt + delta[: at + len(content)]
        if eos_text and full[len(rendered):].startswith(eos_text):
            rendered += eos_text
    return segments


def plain_segments(template: str, messages: list[dict[str, str]]) -> Segments:
    """Messages through a non-chat template: each user turn is an instruction (a system text leads the first)."""
    segments: Segments = []
    system = ""
    for msg in messages:
        if msg["role"] == "system":
            system = msg["content"] + "\n\n"
        elif msg["role"] == "user":
            segments.append((system + prompt_for(template, msg["content"]), False))
            system = ""
        else:
            segments.append((msg["content"], True))
    return segments


def record_messages(path: str, line: int, rec: dict[str, Any]) -> list[dict[str, str]]:
    """The record as chat messages, validated: Alpaca fields or a `messages` list."""
    where = f"{path}:{line}"
    if "messages" in rec:
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise LightftError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
        for m in msgs:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise LightftError(f"{where}: each message needs a role (system, user or assistant) and a "
                                   f"string content; found {str(m)[:80]}")
        answers = [m for m in msgs if m["role"] == "assistant"]
        if not answers:
            raise LightftError(f"{where}: no assistant message: nothing to learn from")
        if any(not m["content"].strip() for m in answers):
            raise EmptyResponse(f"{where}: empty assistant message (nothing to learn from): skipped")
        return msgs
    hint = 'instruct data: Alpaca {"instruction", "input", "output"} or chat {"messages": [...]} records'
    instruction = require_field(path, line, rec, "instruction", hint)
    output = require_field(path, line, rec, "output", hint)
    input_text = rec.get("input") or ""
    if not all(isinstance(x, str) for x in (instruction, output, input_text)):
        raise LightftError(f"{where}: instruction, input and output must be strings")
    if not instruction.strip():
        raise LightftError(f"{where}: empty 'instruction'")
    if not output.strip():
        raise EmptyResponse(f"{where}: empty 'output' (nothing to learn from): skipped")
    return [{"role": "user", "content": user_text(instruction, input_text), "instruction": instruction,
             "input": input_text}, {"role": "assistant", "content": output}]


class InstructDataModule(LMDataModule):
    task = "instruct"
    split_long = False  # an example never straddles two rows

    def __init__(self, *args: Any, template: Optional[str] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.template = resolve_template(template or self.opts.template, self.tokenizer)

    def task_args(self) -> dict[str, Any]:
        return {"template": self.template}

    @classmethod
    def eval_args(cls, task_state: dict[str, Any]) -> dict[str, Any]:
        return {"template": task_state.get("template")}

    def cache_options(self) -> dict[str, Any]:
        return {**super().cache_options(), "resolved_template": self.template,
                "chat_template": self.tokenizer.chat_template}

    def source_files(self, path: str):
        return super(LMDataModule, self).source_files(path)

    def segments(self, path: str, line: int, rec: dict[str, Any]) -> Segments:
        msgs = record_messages(path, line, rec)
        if self.template == "chat":
            clean = [{"role": m["role"], "content": m["content"]} for m in msgs]
            return chat_segments(self.tokenizer, clean, f"{path}:{line}")
        if "instruction" in msgs[0]:  # Alpaca record: keep its input apart for the with-input template
            return [(prompt_for(self.template, msgs[0]["instruction"], msgs[0]["input"]), False),
                    (msgs[1]["content"], True)]
        return plain_segments(self.template, msgs)

    def tokens(self, segments: Segments) -> tuple[list[int], list[int]]:
        """input_ids and labels; BOS (if the tokenizer adds one) only at the start; EOS after each response."""
        tok, eos = self.tokenizer, eos_id_of(self.tokenizer)
        ids: list[int] = []
        labels: list[int] = []
        for text, is_response in segments:
            first = not ids
            starts_with_bos = bool(tok.bos_token) and text.startswith(tok.bos_token)
            piece = tok.encode(text, add_special_tokens=first and not starts_with_bos)
            if is_response:
                piece = piece + [eos]
            ids += piece
            labels += piece if (is_response or self.opts.train_on_inputs) else [-100] * len(piece)
        return ids, labels

    def build_examples(self, path: str, split: str) -> tuple[list[Example], dict[str, Any]]:
        examples: list[Example] = []
        stats: dict[str, Any] = {"records": 0, "response_tokens": 0}
        for line, rec in read_records(path, self.opts.format):
            if self.full(examples, split, stats):
                break
            stats["records"] += 1
            try:
                segments = self.segments(path, line, rec)
            except EmptyResponse as e:
                stats["empty_response"] = stats.get("empty_response", 0) + 1
                print(f"[data] {escape_for_terminal(e, 300)}", file=sys.stderr)
                continue
            ids, labels = self.tokens(segments)
            keep = self.handle_overlong(path, line, ids, stats)
            if keep is None:
                continue
            ids, labels = ids[:keep], labels[:keep]
            if all(x == -100 for x in labels[1:]):
                # truncation cut every response token: nothing would be learned from this example
                stats["dropped_no_response_left"] = stats.get("dropped_no_response_left", 0) + 1
                continue
            stats["response_tokens"] += sum(x != -100 for x in labels[1:])
            examples.append({**causal_example(ids, labels), "line": line})
        return examples, stats

    def pack(self, split: str, docs: list[Example]) -> list[Example]:
        return super().pack(split, docs) if self.opts.packing else docs
