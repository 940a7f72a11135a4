"""SQuAD with the same budget: `lightft train qa` vs a plain `transformers` loop, in one script run.

Both sides see the same windows in the same order (lightft's QA DataModule builds them and its
seeded loader orders them), the same optimiser (AdamW, same groups, warm-up and linear decay,
gradient clipping), the same steps, batch size, sequence length, precision and threads, and are
scored by the same post-processing and SQuAD EM / F1 code. What differs is the model code and the
training loop: lightft's own transformer under Lightning vs `BertForQuestionAnswering` in a loop.

    python benchmarks/qa_vs_transformers.py --steps 40 --batch-size 16 --max-length 192 --doc-stride 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from common import minilm_dir  # noqa: E402

from lightft.data.qa import QADataModule  # noqa: E402
from lightft.options import Options  # noqa: E402
from lightft.tasks.qa import score_windows, windows_from_batch  # noqa: E402
from lightft.tokenizer import load_tokenizer  # noqa: E402
from lightft.tasks.optim import build_optimizer  # noqa: E402
from lightft.train.run import seed_everything, train  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad"


def run_transformers(opts: Options) -> dict[str, float]:
    from transformers import AutoModelForQuestionAnswering

    seed_everything(opts.seed)
    dm = QADataModule(load_tokenizer(opts.model), opts, train_file=opts.train, val_file=opts.val)
    dm.prepare_data()
    dm.setup("fit")
    model = AutoModelForQuestionAnswering.from_pretrained(opts.model)
    optim = build_optimizer(model, opts, opts.resolved_lr(), opts.max_steps, head_names={"qa_outputs"})
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    model.train()
    start, step = time.perf_counter(), 0
    while step < opts.max_steps:
        for batch in dm.train_dataloader():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"], start_positions=batch["start_positions"],
                        end_positions=batch["end_positions"])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step >= opts.max_steps:
                break
    seconds = time.perf_counter() - start
    model.eval()
    windows = []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])
            pad = batch["attention_mask"] == 0
            windows += windows_from_batch(batch, out.start_logits.masked_fill(pad, -1e4), out.end_logits.masked_fill(pad, -1e4))
    return {**score_windows(windows, opts), "train_seconds": round(seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--doc-stride", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        opts = Options(model=str(minilm_dir()), train=str(DATA / "train.json"), val=str(DATA / "validation.json"),
                       out=str(Path(tmp) / "run"), lora=False, max_steps=args.steps, epochs=1,
                       batch_size=args.batch_size, max_length=args.max_length, doc_stride=args.doc_stride,
                       lr=args.lr, progress=False, threads=args.threads,
                       # pinned: the plain loop below runs fp32 on the loader's own (random) order
                       precision="32-true", dtype="float32", group_by_length=False)
        ours = train("qa", opts)
        theirs = run_transformers(opts)
    result = {"lightft": {"exact_match": ours["val_exact_match"], "f1": ours["val_f1"], "train_seconds": ours["train_seconds"]},
              "transformers": {k: theirs[k] for k in ("exact_match", "f1", "train_seconds")},
              "settings": vars(args), "torch": torch.__version__}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
