"""Instruction prompt templates: Alpaca's, the model's own chat template, or a user's text with placeholders.

Training data (lightft/data/instruct.py) and generation (lightft/generate.py) render prompts through
these same functions, so a tuned model is asked exactly the way it was taught.
"""

from __future__ import annotations

from lightft.errors import LightftError
from lightft.tokenizer import Tokenizer

# Stanford Alpaca's prompt (tatsu-lab/stanford_alpaca, train.py), with and without an input.
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def resolve_template(name: str, tokenizer: Tokenizer) -> str:
    """'auto' -> 'chat' when the tokenizer has a chat template, else 'alpaca'; checks the others."""
    if name == "auto":
        return "chat" if tokenizer.chat_template else "alpaca"
    if name == "chat" and not tokenizer.chat_template:
        raise LightftError(f"--template chat: {tokenizer.source} has no chat template; use --template alpaca "
                           "or a text with {instruction} and {input}")
    if name not in ("alpaca", "chat") and "{instruction}" not in name:
        raise LightftError(f"--template {name!r}: use auto, alpaca, chat, or a text containing {{instruction}} "
                           "(and optionally {input})")
    return name


def user_text(instruction: str, input_text: str) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def prompt_for(template: str, instruction: str, input_text: str = "") -> str:
    """A non-chat template filled in (Alpaca's picks its with/without-input variant)."""
    if template == "alpaca":
        pattern = ALPACA_WITH_INPUT if input_text else ALPACA_NO_INPUT
    else:
        pattern = template
    return pattern.replace("{instruction}", instruction).replace("{input}", input_text)


def format_prompt(tokenizer: Tokenizer, template: str, instruction: str, input_text: str = "") -> str:
    """The text a model sees before its response (used by training data and by `lightft generate`)."""
    if template == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text(instruction, input_text)}],
                                             add_generation_prompt=True)
    return prompt_for(template, instruction, input_text)
