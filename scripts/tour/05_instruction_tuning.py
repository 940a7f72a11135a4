"""Lesson 5: instruction tuning: the chat template, labels of -100 on the prompt, and EOS after the answer.

    python scripts/tour/05_instruction_tuning.py

A tokenizer with a ChatML chat template (the format of SmolLM2-Instruct and many others) renders a
conversation to text; lightft cuts it into prompt and response segments and labels every token:
the prompt's with -100 (no loss), the response's with their own ids, plus an EOS token appended so
the model learns to stop. Then a tiny model is trained twice on the same six conversations, with
and without the prompt mask, to show what the mask changes.
Source: lightft/data/instruct.py (chat_segments, InstructDataModule.tokens), lightft/tokenizer.py
(apply_chat_template), lightft/data/packing.py (collate_causal), lightft/tasks/causal_lm.py (next_token_nll).
"""

# %% Setup: a word-level tokenizer with ChatML special tokens and chat template, saved as a model folder would hold it
import json
import tempfile
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

import tourkit
from lightft.data.instruct import InstructDataModule, chat_segments
from lightft.data.packing import causal_example, collate_causal
from lightft.options import Options
from lightft.tasks.causal_lm import next_token_nll
from lightft.tokenizer import load_tokenizer

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
COUNTRIES = {"france": "paris", "germany": "berlin", "italy": "rome", "spain": "madrid", "japan": "tokyo",
             "egypt": "cairo"}
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
WORDS = ["\n", "user", "assistant", "what", "is", "the", "capital", "of", "?", ".", "it",
         *COUNTRIES, *COUNTRIES.values()]

folder = Path(tempfile.mkdtemp(prefix="tour05-"))
backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, unk_token="<unk>"))
backend.normalizer = normalizers.Lowercase()
backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"[ \t]+"), "removed"),
                                                 pre_tokenizers.Split(Regex(r"\n|[^\w\s]"), "isolated")])
backend.add_special_tokens(SPECIALS[:3])
backend.save(str(folder / "tokenizer.json"))
(folder / "tokenizer_config.json").write_text(json.dumps(
    {"eos_token": "<|im_end|>", "pad_token": "<pad>", "unk_token": "<unk>", "chat_template": CHATML}))
tok = load_tokenizer(folder)
print(f"vocabulary {tok.vocab_size} tokens; eos = {tok.eos_token!r} (id {tok.eos_id})")


def conversation(country: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is the capital of {country.title()}?"},
            {"role": "assistant", "content": f"It is {COUNTRIES[country].title()}."}]


# %% 1. The chat template turns messages into one text
messages = conversation("france")
tourkit.title("rendered by the chat template (the model's own format)")
print(tok.apply_chat_template(messages, add_generation_prompt=False))

# %% 2. lightft cuts it into prompt and response segments, turn by turn
segments = chat_segments(tok, messages, "lesson 5")
for text, is_response in segments:
    print(f"{'response' if is_response else 'prompt  '}: {text!r}")

# %% 3. Token by token: the label is the token's id where the loss applies, -100 where it does not
dm = InstructDataModule(tok, Options(template="chat"))  # the DataModule's tokens(): no data file needed here
ids, labels = dm.tokens(segments)
tourkit.title("labels (position t is predicted from positions < t)")
tourkit.table([(i, repr(tok.backend.id_to_token(t)), t, lab, "learned" if lab != -100 else "")
               for i, (t, lab) in enumerate(zip(ids, labels))], ("pos", "token", "id", "label", ""))
prompt_ids = tok.encode(segments[0][0])
response_ids = tok.encode(segments[1][0], add_special_tokens=False)
assert ids == prompt_ids + response_ids + [tok.eos_id]  # EOS appended after the response
assert labels == [-100] * len(prompt_ids) + response_ids + [tok.eos_id]
# Why EOS: a model only stops when it predicts the end token; trained without it, it would go on
# writing past the answer until --max-new-tokens.
ids_all, labels_all = InstructDataModule(tok, Options(template="chat", train_on_inputs=True)).tokens(segments)
assert ids_all == ids and labels_all == ids  # --train-on-inputs: every token is a target

# %% 4. What the mask changes: the same tiny model trained with and without it (plain PyTorch loop)
tourkit.title("training a tiny model on 6 conversations, 150 steps, with and without the prompt mask")
results = {}
for train_on_inputs in (False, True):
    dm = InstructDataModule(tok, Options(template="chat", train_on_inputs=train_on_inputs))
    examples = [causal_example(*dm.tokens(chat_segments(tok, conversation(c), "lesson 5"))) for c in COUNTRIES]
    batch = collate_causal(examples, pad_id=tok.pad_id)
    model = tourkit.tiny_model("llama", seed=0, vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        hidden = model(batch["input_ids"], attention_mask=batch["attention_mask"]).hidden_states
        nll, n = next_token_nll(model.lm_head, hidden, batch["labels"])
        opt.zero_grad()
        (nll / n).backward()
        opt.step()
    model.eval()
    with torch.no_grad():  # score prompt and response tokens separately, whatever the training labels were
        scored = collate_causal([causal_example(*InstructDataModule(tok, Options(template="chat")).tokens(
            chat_segments(tok, conversation(c), "lesson 5"))) for c in COUNTRIES], pad_id=tok.pad_id)
        hidden = model(scored["input_ids"], attention_mask=scored["attention_mask"]).hidden_states
        response = next_token_nll(model.lm_head, hidden, scored["labels"])
        prompt_labels = torch.where((scored["labels"] == -100) & (scored["attention_mask"] == 1),
                                    scored["input_ids"], torch.full_like(scored["input_ids"], -100))
        prompt = next_token_nll(model.lm_head, hidden, prompt_labels)
        logits = model(scored["input_ids"], attention_mask=scored["attention_mask"]).logits
        last = scored["attention_mask"].sum(1) - 2  # the position right after the answer's last word
        stops = int((logits[torch.arange(len(COUNTRIES)), last].argmax(-1) == tok.eos_id).sum())
    results[train_on_inputs] = (float(response[0] / response[1]), float(prompt[0] / prompt[1]), stops)
tourkit.table([("prompt masked (default)", *[f"{v:.3f}" for v in results[False][:2]], f"{results[False][2]}/6"),
               ("--train-on-inputs", *[f"{v:.3f}" for v in results[True][:2]], f"{results[True][2]}/6")],
              ("training", "loss on responses", "loss on prompt tokens", "predicts EOS after the answer"))
# Both learn the answers and to stop; only the unmasked run also learns to reproduce the prompts.
assert results[False][0] < 0.5 and results[True][0] < 0.5
assert results[False][1] > results[True][1] + 0.5
assert results[False][2] == results[True][2] == 6
print("\nLesson 5 done: the mask spends the loss on answers only; EOS teaches the model where they end.")
