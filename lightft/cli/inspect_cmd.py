"""`lightft inspect DIR`: summarise a checkpoint folder and report anything wrong with it."""

from __future__ import annotations

import json
from pathlib import Path

import click


def lora_summary(model, targets: str, r: int, alpha: float) -> dict:
    """What LoRA with these settings would train: wrapped layers, trainable parameters and their share."""
    from lightft.lora import apply_lora

    total = model.num_parameters()
    wrapped = apply_lora(model, targets, r=r, alpha=alpha)
    trainable = model.num_parameters(trainable_only=True)
    return {
        "targets": targets,
        "r": r,
        "alpha": alpha,
        "layers": len(wrapped),
        "trainable_parameters": trainable,
        "trainable_share": f"{100 * trainable / (total + trainable):.3f}%",
    }


def summarise(model_dir: str, lora: tuple[int, str, float | None] | None = None) -> dict:
    """Family, shape, parameter count, dtype, files and load problems of a model folder."""
    from lightft.checkpoint import load_model, weight_files
    from lightft.tokenizer import load_tokenizer

    model = load_model(model_dir, strict=False)
    cfg = model.cfg
    path = Path(model_dir)
    info = {
        "path": str(path.resolve()),
        "family": cfg.family,
        "model_type": cfg.hf_config.get("model_type"),
        "layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "heads": cfg.num_heads,
        "kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "max_positions": cfg.max_positions,
        "position": cfg.position if not cfg.rope_scaling else f"rope ({cfg.rope_scaling.get('rope_type', cfg.rope_scaling.get('type'))})",
        "tied_embeddings": cfg.tie_embeddings,
        "parameters": model.num_parameters(),
        "dtype": str(cfg.hf_config.get("torch_dtype") or cfg.hf_config.get("dtype") or "float32"),
        "files": sorted(p.name for p in path.iterdir() if p.is_file()),
        "weight_files": [p.name for p in weight_files(path)],
        "problems": model.source.report.problems(),
    }
    if lora is not None:
        r, targets, alpha = lora
        info["lora"] = lora_summary(model, targets, r, alpha if alpha is not None else 2.0 * r)
    try:
        tok = load_tokenizer(model_dir)
        info["tokenizer_vocab"] = tok.vocab_size
        info["special_tokens"] = {k: v for k, v in tok.tokens.items() if v}
        info["chat_template"] = bool(tok.chat_template)
    except Exception as e:  # a tokenizer problem is reported, not fatal, for inspect
        info["problems"].append(str(e))
    return info


@click.command("inspect")
@click.argument("model_dir")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--lora-r", type=int, default=None, help="Also report what LoRA of this rank would train.")
@click.option("--lora-targets", default="q,v", show_default=True,
              help="LoRA targets: q,k,v,o,gate,up,down or the groups attn, mlp, all-linear.")
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha (default: 2 x r).")
def command(model_dir: str, as_json: bool, lora_r: int | None, lora_targets: str, lora_alpha: float | None) -> None:
    """Summarise a checkpoint: family, layers, hidden size, heads, vocab, parameters, dtype, files.

    With --lora-r, also the trainable parameters (and their share of all parameters) under LoRA.

    \b
    MODEL_DIR is a model folder, a run folder or a model name (`lightft models`).

    \b
    Examples:
      lightft inspect minilm
      lightft inspect path/to/model
      lightft inspect runs/smollm2 --json
      lightft inspect path/to/smollm2 --lora-r 8 --lora-targets q,v
    """
    from lightft.cli.common import resolve_model

    info = summarise(resolve_model(model_dir), lora=(lora_r, lora_targets, lora_alpha) if lora_r is not None else None)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "problems":
            value = "none" if not value else "; ".join(value)
        click.echo(f"{key:>18}: {value}")
