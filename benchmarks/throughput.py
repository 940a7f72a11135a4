"""Training / generation throughput of lightft vs transformers + peft, side by side in one run (issue 7).

    python benchmarks/throughput.py --workload a     # LoRA instruct tuning, SmolLM2-135M, alpaca, bf16
    python benchmarks/throughput.py --workload b     # the same on fixed-length random tokens
    python benchmarks/throughput.py --workload c     # full fine-tuning MiniLM on SST-2, bf16 autocast
    python benchmarks/throughput.py --workload d     # greedy generation with a KV cache, bf16
    python benchmarks/throughput.py --workload e --device cuda   # LoRA on a random ~1.1B Llama, on a GPU
    python benchmarks/throughput.py --workload q --sides lightft,lightft+nf4    # QLoRA vs bf16 LoRA (issue 14)
    python benchmarks/throughput.py --workload q16 --sides lightft,lightft+q4_1,lightft+nf4  # both 4-bit schemes
    python benchmarks/throughput.py --workload s --sides lightft,lightft+dora   # DoRA vs LoRA, MiniLM on SST-2

Sides: `lightft` (the plain user path), `lightft+compile`, `lightft+nf4` (--quantize nf4: QLoRA),
`lightft+q4_1` (--quantize q4_1: QLoRA on llama.cpp's format), `lightft+dora` (--dora), and `baseline`
(transformers + peft).

Each framework runs in its own worker subprocess (so each has its own peak RSS); the parent sends
them blocks of steps in turn (lightft, baseline, baseline, lightft, ...), one process working at a
time, after a warm-up block each. Both workers get the same tokenised examples (lightft's DataModule
tokenises once; tokenisation is not timed), the same batch size, sequence limit, precision,
optimiser (AdamW, lr, weight decay, clip 1.0) and thread count. The baseline batches the way a
`transformers` DataCollator does: random order, padded to the longest row, labels -100 on prompt
and padding, the model's own loss. The lightft side is the user path: its DataModule's train
loader (length-grouped batches when --group-by-length, as the CLI flag) and the TaskModule's
`training_step` (forward + loss), then backward, clipping and the optimiser step timed by hand, so
Lightning's Trainer loop is not part of the time. A step's time includes fetching its batch.

Model FLOPs, MFU and the peaks are defined in benchmarks/common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402

WORKLOADS: dict[str, dict[str, Any]] = {
    "a": dict(title="LoRA r=8 q,v instruct tuning, SmolLM2-135M, alpaca (real lengths), batch 8, max 512, bf16",
              model="smollm2", mode="lora", data="alpaca", batch=8, max_length=512, precision="bf16-true",
              lr=2e-4, group=True),
    "b": dict(title="LoRA r=8 q,v, SmolLM2-135M, random tokens, batch 8 x 512, bf16",
              model="smollm2", mode="lora", data="random", batch=8, max_length=512, precision="bf16-true",
              lr=2e-4, group=False),
    "c": dict(title="full fine-tuning, MiniLM-L6 sequence classification, SST-2, batch 32, max 128, bf16 autocast",
              model="minilm", mode="full", data="sst2", batch=32, max_length=128, precision="bf16-mixed",
              lr=1e-4, group=True),
    "d": dict(title="greedy generation with KV cache, SmolLM2-135M, alpaca prompts, batch 1, bf16",
              model="smollm2", mode="generate", data="alpaca", batch=1, max_length=512, precision="bf16-true",
              new_tokens=64, group=False),
}
# (e) is meant for a GPU (--device cuda); `--e-size tiny` checks the harness on a CPU in seconds.
WORKLOADS["e"] = {**WORKLOADS["b"], "model": "random-llama",
                  "title": "LoRA r=8 q,v, Llama-shaped random model (TinyLlama-1.1B shape), random tokens, "
                           "batch 8 x 512, bf16"}
WORKLOADS["d32"] = {**WORKLOADS["d"], "precision": "32-true",
                    "title": "greedy generation with KV cache, SmolLM2-135M, alpaca prompts, batch 1, fp32"}
# issue 14: QLoRA / DoRA against plain LoRA at small budgets, in fp32 compute: the 2-core CPU they were
# measured on has AVX2 only, where a bf16 matmul runs at ~0.2 GFLOP/s against ~12 in fp32 (RESULTS.md)
WORKLOADS["q"] = {**WORKLOADS["a"], "batch": 2, "max_length": 96, "precision": "32-true",
                  "title": "LoRA r=8 q,v instruct tuning, SmolLM2-135M, alpaca, batch 2, max 96, fp32"}
WORKLOADS["q1b"] = {**WORKLOADS["q"], "model": "random-llama", "data": "random", "group": False, "batch": 1,
                    "max_length": 32, "title": "LoRA r=8 q,v, random TinyLlama-1.1B-shaped Llama, random tokens, batch 1 x 32, fp32"}
# The same comparisons in bf16 for CPUs that run it fast (AMX / AVX-512-BF16) and GPUs: the issue's
# "QLoRA vs bf16 LoRA" as asked, at workload (a)'s batches, and on the 1.1B shape where memory matters.
WORKLOADS["q16"] = {**WORKLOADS["a"], "title": "LoRA r=8 q,v instruct tuning, SmolLM2-135M, alpaca, batch 8, max 512, bf16"}
WORKLOADS["q1b16"] = {**WORKLOADS["q1b"], "batch": 2, "max_length": 256, "precision": "bf16-true",
                      "title": "LoRA r=8 q,v, random TinyLlama-1.1B-shaped Llama, random tokens, batch 2 x 256, bf16"}
WORKLOADS["s"] = dict(title="LoRA r=8 q,v sequence classification, MiniLM-L6, SST-2, batch 16, max 64, fp32",
                      model="minilm", mode="lora", data="sst2", batch=16, max_length=64, precision="32-true",
                      lr=5e-4, group=True)


SIDES = ("lightft", "lightft+compile", "lightft+nf4", "lightft+q4_1", "lightft+dora", "baseline")
QUANT_SIDES = {"lightft+nf4": "nf4", "lightft+q4_1": "q4_1"}  # side -> --quantize


# --------------------------------------------------------------------------------------------- data
def lightft_options(spec: dict[str, Any], args: argparse.Namespace):
    from lightft.options import Options

    return Options(lora=spec["mode"] != "full", lora_targets="q,v", lora_r=8, lora_alpha=16.0, lora_dropout=0.0,
                   batch_size=spec["batch"], max_length=spec["max_length"], lr=spec.get("lr"),
                   weight_decay=0.01, warmup=0, schedule="constant", classifier_dropout=0.1,
                   group_by_length=spec["group"] and not args.no_group, precision=spec["precision"],
                   dtype="bfloat16" if spec["precision"] == "bf16-true" else "float32",
                   limit_train=args.limit_train, limit_val=args.limit_val, template="auto",
                   compile=args.compile, grad_checkpointing=args.grad_checkpointing, progress=False,
                   seed=42 + args.seed, kernels=args.kernels,
                   quantize=QUANT_SIDES.get(getattr(args, "worker", None), "none"),
                   dora=getattr(args, "worker", None) == "lightft+dora")


def model_dir(spec: dict[str, Any], args: argparse.Namespace) -> Path:
    if spec["model"] == "random-llama":
        return common.random_llama_dir(args.e_size)
    return common.smollm2_dir() if spec["model"] == "smollm2" else common.minilm_dir()


def datamodule(spec: dict[str, Any], args: argparse.Namespace):
    """lightft's DataModule for the workload's data (tokenised once, cached by lightft)."""
    from lightft.tokenizer import load_tokenizer

    opts = lightft_options(spec, args)
    if spec["model"] == "random-llama":
        return None, opts  # random tokens only: no tokenizer, no data files
    tok = load_tokenizer(model_dir(spec, args))
    if spec["data"] == "sst2":
        from lightft.data.classify import ClassificationDataModule

        d = common.SHARED_DATA / "sst2"
        dm = ClassificationDataModule(tok, opts, str(d / "train.jsonl"), str(d / "validation.jsonl"))
    else:
        from lightft.data.instruct import InstructDataModule

        dm = InstructDataModule(tok, opts, *alpaca_files())
    dm.setup("fit")
    return dm, opts


def alpaca_files() -> tuple[str, str]:
    """The alpaca splits as JSONL without the records whose output is empty (the instruct reader refuses them)."""
    out = Path(os.environ.get("LIGHTFT_CACHE", Path.home() / ".cache" / "lightft")) / "bench-alpaca"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "validation"):
        dst = out / f"{split}.jsonl"
        if not dst.is_file():
            records = json.loads((common.SHARED_DATA / "alpaca" / f"{split}.json").read_text(encoding="utf-8"))
            tmp = dst.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records if r.get("output", "").strip()),
                           encoding="utf-8")
            os.replace(tmp, dst)
        paths.append(str(dst))
    return paths[0], paths[1]


def random_batches(vocab: int, batch: int, length: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    while True:
        ids = torch.randint(0, vocab, (batch, length), generator=g)
        yield {"input_ids": ids, "labels": ids.clone()}


def hf_collate(examples: list[dict[str, Any]], pad_id: int, label_map: dict[str, int] | None) -> dict[str, Any]:
    """What a transformers DataCollator (Seq2Seq / WithPadding) builds: right padding to the longest row."""
    T = max(len(e["input_ids"]) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    out: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if label_map is None:
        out["labels"] = torch.full((B, T), -100, dtype=torch.long)
    else:
        out["token_type_ids"] = torch.zeros((B, T), dtype=torch.long)
        out["labels"] = torch.tensor([label_map[e["label"]] for e in examples])
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.as_tensor(e["input_ids"])
        mask[i, :n] = 1
        if label_map is None:
            out["labels"][i, :n] = torch.as_tensor(e["labels"])
        else:
            out["token_type_ids"][i, :n] = torch.as_tensor(e["token_type_ids"])
    return out


def length_grouped(order: list[int], lengths: list[int], batch: int, mult: int = 50) -> list[int]:
    """What `Trainer(group_by_length=True)` does to a shuffled order: sort each run of `mult` batches by length."""
    out = []
    for s in range(0, len(order), mult * batch):
        out += sorted(order[s : s + mult * batch], key=lambda i: -lengths[i])
    return out


def cycle_loader(make) -> Iterator[dict[str, Any]]:
    while True:
        yield from make()


def base_weight_bytes(backbone) -> dict[str, int]:
    """Bytes of the frozen base (every backbone tensor but the LoRA / DoRA factors), and of its block
    linears alone (the part --quantize nf4 stores in 4 bits), counted from the tensors after loading."""
    from lightft.lora import lora_parameters
    from lightft.quant import quantized_bytes

    adapters = {id(p) for p in lora_parameters(backbone)}
    tensors = {id(t): t for t in [*backbone.parameters(), *backbone.buffers()] if id(t) not in adapters}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    nf4, _ = quantized_bytes(backbone)
    linears = nf4 + sum(m.weight.numel() * m.weight.element_size() for n, m in backbone.named_modules()
                        if n.startswith("layers.") and isinstance(m, torch.nn.Linear) and m.weight is not None)
    return {"base_bytes": total, "block_linear_bytes": linears}


# ------------------------------------------------------------------------------------------ workers
class Side:
    """One framework's model, batches and step; subclasses fill `setup` and the step functions."""

    def __init__(self, spec: dict[str, Any], args: argparse.Namespace):
        self.spec, self.args = spec, args
        self.autocast = spec["precision"] == "bf16-mixed"
        self.device = torch.device(args.device)

    def ctx(self):
        kind = self.device.type
        return torch.autocast(kind, dtype=torch.bfloat16) if self.autocast else torch.autocast(kind, enabled=False)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run_steps(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            self.sync()
            t = time.perf_counter()
            info = self.step()
            self.sync()
            info["time"] = time.perf_counter() - t
            out.append(info)
        return out

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = self.to_device(batch)
        with self.ctx():
            loss = self.loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        mask = batch.get("attention_mask")
        lengths = mask.sum(1).tolist() if mask is not None else [batch["input_ids"].shape[1]] * batch["input_ids"].shape[0]
        return {"lengths": lengths, "padded": batch["input_ids"].numel(), "samples": batch["input_ids"].shape[0],
                "loss": float(loss)}

    def step(self) -> dict[str, Any]:
        if self.spec["mode"] == "generate":
            prompt = self.prompts[self.prompt_i % len(self.prompts)]
            self.prompt_i += 1
            new = self.generate(prompt)
            return {"lengths": [len(prompt) + len(new)], "padded": len(prompt) + len(new), "samples": 1,
                    "new_tokens": len(new), "tokens": new}
        return self.train_step(next(self.batches))

    def prepare_common(self, dm, opts) -> None:
        self.dm, self.opts = dm, opts
        if self.spec["mode"] == "generate":
            # prompts: the alpaca validation prompts (tokens before the first response token)
            self.prompts = []
            for e in dm.datasets["val"]:
                first = next(i for i, y in enumerate(e["labels"]) if y != -100)
                self.prompts.append(e["input_ids"][:first])
            self.prompt_i = 0


class LightftSide(Side):
    def setup(self) -> dict[str, Any]:
        from lightft.runs.backbone import load_backbone, prepare_backbone

        spec = self.spec
        dm, opts = datamodule(spec, self.args)
        self.prepare_common(dm, opts)
        if spec["mode"] == "generate":  # the `lightft generate` path: load_for_generation (packs bf16 weights)
            from lightft.generate import load_for_generation

            self.model = load_for_generation(str(model_dir(spec, self.args)), dtype=opts.dtype, chat=False,
                                             kernels=opts.kernels)[0]
            return {}
        backbone = load_backbone(str(model_dir(spec, self.args)), opts)  # --quantize nf4: NF4 as it is read
        prepare_backbone(backbone, opts)
        base = base_weight_bytes(backbone)
        if spec["data"] == "sst2":
            from lightft.tasks.classify import ClassificationModule

            self.module = ClassificationModule(backbone, opts, **dm.task_args())
        else:
            from lightft.tasks.causal_lm import InstructModule

            self.module = InstructModule(backbone, opts, **(dm.task_args() if dm is not None else {}))
        if opts.dtype == "bfloat16":
            self.module.to(torch.bfloat16)  # bf16-true: what Lightning does to the whole module
        self.module.to(self.device)
        self.module.train()
        from lightft.tasks.optim import build_optimizer

        self.optimizer = build_optimizer(self.module, opts, opts.resolved_lr(), 1000, head_names={"head"})["optimizer"]
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if spec["data"] == "random":
            self.batches = random_batches(backbone.cfg.vocab_size, spec["batch"], spec["max_length"], 0)
        else:
            self.batches = cycle_loader(dm.train_dataloader)
        self.step_i = 0
        return {"trainable": sum(p.numel() for p in self.params), **base}

    def loss(self, batch):
        self.step_i += 1
        return self.module.training_step(batch, self.step_i)

    @torch.no_grad()
    def generate(self, prompt: list[int]) -> list[int]:
        from lightft.generate import SamplingOptions, generate_ids

        opts = SamplingOptions(max_new_tokens=self.spec["new_tokens"], lookahead=self.args.lookahead)
        return generate_ids(self.model, [prompt], opts, eos=set())[0].token_ids

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        self.module.eval()
        loader = self.dm.val_dataloader()
        if self.spec["data"] == "sst2":
            right = total = 0
            for batch in map(self.to_device, loader):
                with self.ctx():
                    pred = self.module(batch)["logits"].argmax(-1)
                right += int((pred == batch["labels"]).sum())
                total += len(pred)
            return {"val_accuracy": right / total, "val_examples": total}
        nll = n = 0.0
        for batch in map(self.to_device, loader):
            out = self.module(batch)
            nll, n = nll + float(out["nll_sum"]), n + float(out["n_tokens"])
        return {"val_loss": nll / n, "val_tokens": n}


class BaselineSide(Side):
    def setup(self) -> dict[str, Any]:
        import transformers

        transformers.logging.set_verbosity_error()
        spec = self.spec
        dm, opts = datamodule(spec, self.args)
        self.prepare_common(dm, opts)
        dtype = torch.bfloat16 if spec["precision"] == "bf16-true" else torch.float32
        if spec["data"] == "sst2":
            self.model = transformers.BertForSequenceClassification.from_pretrained(
                model_dir(spec, self.args), num_labels=len(dm.label_names), dtype=dtype, attn_implementation="sdpa")
            self.label_map = dm.label_to_id
            pad = dm.tokenizer.pad_id or 0
        else:
            self.model = transformers.LlamaForCausalLM.from_pretrained(model_dir(spec, self.args), dtype=dtype,
                                                                       attn_implementation="sdpa")
            self.label_map = None
            pad = 0 if dm is None else dm.tokenizer.pad_id if dm.tokenizer.pad_id is not None else dm.tokenizer.eos_id
        self.pad = pad
        self.model.to(self.device)
        if spec["mode"] == "generate":
            self.model.eval()
            return {}
        if spec["mode"] == "lora":
            import peft

            cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                  task_type="CAUSAL_LM")
            # adapters in the base dtype (pure bf16 like the lightft side), not PEFT's default fp32 upcast
            self.model = peft.get_peft_model(self.model, cfg, autocast_adapter_dtype=False)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=opts.resolved_lr(), foreach=True)
        if spec["data"] == "random":
            self.batches = random_batches(self.model.config.vocab_size, spec["batch"], spec["max_length"], 0)
        else:
            data = dm.datasets["train"]
            rng = random.Random(self.args.seed)

            def epoch():
                order = list(range(len(data)))
                rng.shuffle(order)
                if self.args.baseline_group:
                    order = length_grouped(order, [len(e["input_ids"]) for e in data], spec["batch"])
                for s in range(0, len(order) - spec["batch"] + 1, spec["batch"]):
                    yield hf_collate([data[i] for i in order[s : s + spec["batch"]]], pad, self.label_map)

            self.batches = cycle_loader(epoch)
        return {"trainable": sum(p.numel() for p in self.params)}

    def loss(self, batch):
        return self.model(**batch).loss

    @torch.no_grad()
    def generate(self, prompt: list[int]) -> list[int]:
        ids = torch.tensor([prompt], device=self.device)
        k = self.spec["new_tokens"]
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=k,
                                  min_new_tokens=k, do_sample=False, pad_token_id=self.pad)
        return out[0, len(prompt):].tolist()

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        self.model.eval()
        data = self.dm.datasets["val"]
        bs = 2 * self.spec["batch"]
        if self.spec["data"] == "sst2":
            right = 0
            for s in range(0, len(data), bs):
                batch = self.to_device(hf_collate(data[s : s + bs], self.pad, self.label_map))
                with self.ctx():
                    pred = self.model(**batch).logits.argmax(-1)
                right += int((pred == batch["labels"]).sum())
            return {"val_accuracy": right / len(data), "val_examples": len(data)}
        nll = n = 0.0
        for s in range(0, len(data), bs):
            batch = self.to_device(hf_collate(data[s : s + bs], self.pad, None))
            count = float((batch["labels"][:, 1:] != -100).sum())
            nll, n = nll + float(self.model(**batch).loss) * count, n + count
        return {"val_loss": nll / n, "val_tokens": n}


def worker(args: argparse.Namespace) -> None:
    """Serve the parent: 'run N' -> that many timed steps, 'finish' -> evaluation and peaks; JSON lines."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = WORKLOADS[args.workload]
    args.compile = args.compile or args.worker == "lightft+compile"
    side = (LightftSide if args.worker.startswith("lightft") else BaselineSide)(spec, args)
    info = side.setup()
    info["setup_peak_rss_mib"] = common.lifetime_peak_rss_mib()
    common.reset_peak_rss()
    if side.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(side.device)
    proto.write(json.dumps(info) + "\n")
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            proto.write(json.dumps(side.run_steps(int(cmd[1]))) + "\n")
        elif cmd[0] == "profile":  # torch.profiler over N steps: where the time of a step goes
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                side.run_steps(int(cmd[1]))
            table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=int(cmd[2]) if len(cmd) > 2 else 25)
            proto.write(json.dumps({"profile": table}) + "\n")
        elif cmd[0] == "finish":
            peak = common.peak_rss_mib()
            result = {"peak_rss_mib": peak, "whole_process_peak_rss_mib": common.lifetime_peak_rss_mib()}
            if side.device.type == "cuda":  # on a GPU the memory that matters is the device's
                result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(side.device) / 2**20
            if spec["mode"] != "generate" and not args.no_eval and spec["data"] != "random":
                result.update(side.evaluate())
            proto.write(json.dumps(result) + "\n")
            return


# ------------------------------------------------------------------------------------------- parent
class Worker:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", name, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self.read()
        self.steps: list[dict[str, Any]] = []

    def read(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} worker died (see its stderr above)")
        return json.loads(line)

    def send(self, text: str) -> Any:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.read()


def summarise(w: Worker, spec: dict[str, Any], model_n: tuple[int, int, int, int], peak: float) -> dict[str, Any]:
    n, n_lora, layers, d_attn = model_n
    steps = w.steps
    time_total = sum(s["time"] for s in steps)
    lengths = [t for s in steps for t in s["lengths"]]
    mode = spec["mode"]
    flops = sum(common.model_flops(mode, n, n_lora, s["lengths"], layers, d_attn, spec["model"] != "minilm")
                for s in steps)
    real = sum(s.get("new_tokens", 0) for s in steps) if mode == "generate" else sum(lengths)
    padded = sum(s["padded"] for s in steps)
    return {
        "steps": len(steps), "tokens_s": real / time_total, "samples_s": sum(s["samples"] for s in steps) / time_total,
        "step_s_median": statistics.median(s["time"] for s in steps),
        "pad_share": 0.0 if mode == "generate" else 1 - sum(lengths) / padded,
        "gflops_s": flops / time_total / 1e9, "mfu": flops / time_total / 1e9 / peak,
        "real_tokens": real, "time_s": time_total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--blocks", type=int, default=3, help="timed blocks per side (interleaved)")
    p.add_argument("--steps", type=int, default=4, help="steps per block (prompts for d)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N for workload (e) and GPU runs of (a)-(c)")
    p.add_argument("--e-size", choices=sorted(common.RANDOM_LLAMAS), default="1b",
                   help="(e): the random Llama's shape (tiny = a few-second check of the harness on a CPU)")
    p.add_argument("--batch", type=int, help="override the workload's batch size")
    p.add_argument("--max-length", type=int, help="override the workload's sequence length (random tokens: the length)")
    p.add_argument("--seed", type=int, default=0, help="LoRA init, batch order (both sides); rerun with others for the spread")
    p.add_argument("--limit-train", type=int, default=1200, help="training examples tokenised (alpaca / sst2)")
    p.add_argument("--limit-val", type=int, default=None, help="validation examples (default: 64 alpaca, 872 sst2)")
    p.add_argument("--no-group", action="store_true", help="lightft: no length-grouped batches")
    p.add_argument("--baseline-group", action="store_true",
                   help="baseline: length-grouped batches as Trainer(group_by_length=True) makes them")
    p.add_argument("--compile", action="store_true", help="lightft: torch.compile the backbone blocks")
    p.add_argument("--grad-checkpointing", action="store_true", help="lightft: activation checkpointing")
    p.add_argument("--no-eval", action="store_true", help="skip the validation pass at the end")
    p.add_argument("--lookahead", type=int, default=4,
                   help="(d) lightft: prompt-lookup drafts per pass, as `lightft generate` (0 = plain decoding)")
    p.add_argument("--kernels", choices=("auto", "off"), default="auto",
                   help="lightft: its fast paths (auto, as the CLI) or the reference math only (off)")
    p.add_argument("--sides", default="lightft,baseline",
                   help=f"comma list of workers, from {', '.join(SIDES)} (lightft+compile = lightft with --compile)")
    p.add_argument("--profile", type=int, default=0, help="after the timed blocks, profile this many steps per side")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args()
    for key in ("batch", "max_length"):  # smaller shapes for a dry run (benchmarks/gpu_check.sh --tiny)
        if getattr(args, key):
            WORKLOADS[args.workload][key] = getattr(args, key)
    if args.limit_val is None:
        args.limit_val = 872 if args.workload == "c" else 64
    if args.worker:
        return worker(args)

    torch.set_num_threads(args.threads)
    spec = WORKLOADS[args.workload]
    machine = common.machine_info()
    fp32_only = spec["precision"] == "32-true"  # a bf16 peak means nothing there (and takes minutes without AMX)
    peak_bf16 = 0.0 if fp32_only else common.matmul_peak(torch.bfloat16, device=args.device)
    peak_fp32 = common.matmul_peak(torch.float32, device=args.device)
    print(f"[bench] {spec['title']}; matmul peak bf16 {peak_bf16:.0f} GFLOP/s, fp32 {peak_fp32:.0f}; "
          f"load {machine['load_average']}", file=sys.stderr)
    argv = [a for a in sys.argv[1:]]
    workers = [Worker(name, argv) for name in args.sides.split(",")]
    for w in workers:
        w.send(f"run {args.warmup}")
    for block in range(args.blocks):
        for w in (workers if block % 2 == 0 else workers[::-1]):
            w.steps += w.send(f"run {args.steps}")
            print(f"[bench] block {block} {w.name}: {sum(s['time'] for s in w.steps[-args.steps:]):.1f}s",
                  file=sys.stderr)
    profiles = {}
    if args.profile:
        for w in workers:
            profiles[w.name] = w.send(f"profile {args.profile}")["profile"]
            print(f"[bench] profile of {args.profile} steps, {w.name}:\n{profiles[w.name]}", file=sys.stderr)
    finals = {w.name: w.send("finish") for w in workers}

    # model FLOPs from the lightft model (same number for both sides)
    from lightft.checkpoint import load_model
    from lightft.lora import apply_lora

    ref = load_model(model_dir(spec, args), dtype="bfloat16")
    if spec["mode"] == "lora":
        apply_lora(ref, "q,v", r=8)
    n, n_lora = common.matmul_params(ref)
    if spec["data"] == "sst2":
        n += ref.cfg.hidden_size * 2  # the 2-label classifier head
    model_n = (n, n_lora, ref.cfg.num_layers, ref.cfg.num_heads * ref.cfg.head_dim)
    del ref
    peak = peak_fp32 if fp32_only else peak_bf16
    results = {w.name: {**summarise(w, spec, model_n, peak), **finals[w.name], "setup": w.info} for w in workers}
    if spec["mode"] == "generate" and len(workers) == 2:
        a, b = workers  # greedy decoding: both sides should pick the same tokens
        same = sum(x == y for sa, sb in zip(a.steps, b.steps) for x, y in zip(sa["tokens"], sb["tokens"]))
        results["greedy_token_agreement"] = same / max(1, sum(len(s["tokens"]) for s in a.steps))
    out = {"workload": args.workload, "title": spec["title"], "machine": {**machine, "load_after": os.getloadavg()},
           "matmul_peak_gflops": {"bf16": peak_bf16, "fp32": peak_fp32}, "N": n, "N_lora": n_lora,
           "args": vars(args), "results": results, "profiles": profiles}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print_table(out)


def print_table(out: dict[str, Any]) -> None:
    res = out["results"]
    sides = [k for k in SIDES if k in res]
    print(f"\n{out['title']}  (load avg {out['machine']['load_average'][0]:.1f} -> {out['machine']['load_after'][0]:.1f};"
          f" bf16 peak {out['matmul_peak_gflops']['bf16']:.0f}, fp32 {out['matmul_peak_gflops']['fp32']:.0f} GFLOP/s)")
    print("| side | tokens/s | samples/s | step s (median) | padding | peak RSS MiB | GFLOP/s | MFU | eval |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for s in sides:
        r = res[s]
        ev = ", ".join(f"{k}={r[k]:.4f}" for k in ("val_loss", "val_accuracy") if k in r)
        mem = f"{r['peak_rss_mib']:.0f}" + (f" (CUDA {r['cuda_peak_mib']:.0f})" if "cuda_peak_mib" in r else "")
        print(f"| {s} | {r['tokens_s']:.0f} | {r['samples_s']:.2f} | {r['step_s_median']:.2f} | {r['pad_share']:.1%} "
              f"| {mem} | {r['gflops_s']:.0f} | {r['mfu']:.1%} | {ev} |")
    b = res.get("baseline")
    for s in sides:
        if b is not None and s != "baseline":
            a = res[s]
            print(f"{s} / baseline: tokens/s {a['tokens_s'] / b['tokens_s']:.2f}x, "
                  f"peak RSS {a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x")
    plain = res.get("lightft")
    for s in sides:
        if plain is not None and (s in QUANT_SIDES or s == "lightft+dora"):
            a = res[s]
            base = (f"base bytes {a['setup']['base_bytes'] / 2**20:.0f} vs {plain['setup']['base_bytes'] / 2**20:.0f} "
                    f"MiB ({a['setup']['base_bytes'] / plain['setup']['base_bytes']:.2f}x), block linears "
                    f"{a['setup']['block_linear_bytes'] / plain['setup']['block_linear_bytes']:.2f}x, ")
            evals = "".join(f", {k} {a[k]:.4f} vs {plain[k]:.4f} ({a[k] / plain[k] - 1:+.1%})"
                            for k in ("val_loss", "val_accuracy") if k in a)
            print(f"{s} / lightft: {base}whole-process peak RSS {a['whole_process_peak_rss_mib']:.0f} vs "
                  f"{plain['whole_process_peak_rss_mib']:.0f} MiB "
                  f"({a['whole_process_peak_rss_mib'] / plain['whole_process_peak_rss_mib']:.2f}x), training peak "
                  f"{a['peak_rss_mib'] / plain['peak_rss_mib']:.2f}x, tokens/s {a['tokens_s'] / plain['tokens_s']:.2f}x"
                  f"{evals}")
    if "greedy_token_agreement" in res:
        print(f"greedy tokens identical: {res['greedy_token_agreement']:.1%}")


if __name__ == "__main__":
    main()
