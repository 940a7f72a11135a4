"""Read and write Hugging Face-layout checkpoint folders (config.json + safetensors) for the core model.

Loading builds the model on the `meta` device (no memory, no random init), reads each tensor once
from the memory-mapped safetensors file in the dtype asked for, and assigns it in place. It ends
with one report of missing / unexpected / mis-shaped keys; anything it cannot explain is an error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lightft.config import ModelConfig, check_model_config
from lightft.errors import LightftError, excerpt
from lightft.families import family_for
from lightft.keymap import apply_transform
from lightft.model import Transformer
from lightft.model_files import inside
from lightft.source import LoadReport, ModelSource
from lightft.textfile import read_json_file

PathLike = Union[str, os.PathLike]
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
OPTIONAL_PARAMS = ("pooler.",)  # absent from some checkpoints (e.g. BertForMaskedLM); initialised from a fixed seed


def parse_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LightftError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file (config.json, run.json, an index); any defect is one line naming the file."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise LightftError(f"{path}: expected a JSON object at the top level")
    return data


def read_model_config(model_dir: PathLike) -> ModelConfig:
    """config.json -> ModelConfig through the family chosen by model_type/architectures, checked before use."""
    path = Path(model_dir)
    if not path.is_dir():
        raise LightftError(f"{path}: model folder not found")
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise missing_config(path)
    hf = read_json(cfg_path)
    try:
        cfg = family_for(hf, str(cfg_path)).read_config(hf, str(cfg_path))
    except LightftError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise LightftError(f"{cfg_path}: malformed config ({type(e).__name__}: {e})") from None
    return check_model_config(cfg, str(cfg_path))


def missing_config(path: Path) -> LightftError:
    """The error for a folder without config.json; a LoRA adapter export is named as such, with the fix."""
    if (path / "adapter_config.json").is_file():
        run = None
        if (path / "lightft_task.json").is_file():  # lightft.task_heads.TASK_FILE, written by `lightft export`
            try:
                run = read_json(path / "lightft_task.json").get("run")
            except LightftError:
                run = None
        source = f"the run folder it was exported from ({run})" if isinstance(run, str) else "the run folder"
        return LightftError(f"{path}: a LoRA adapter (adapter_config.json) without its base model, not a model "
                            f"folder; give {source} as --model, or export that run with --merged")
    return LightftError(f"{path}: missing config.json (a Hugging Face model folder needs config.json, "
                        "model.safetensors and tokenizer.json)")


def weight_files(model_dir: PathLike) -> list[Path]:
    """The safetensors file(s) of a folder: one file, or the shards named by the index."""
    path = Path(model_dir)
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise LightftError(f"{index}: no 'weight_map' object; re-export the sharded checkpoint")
        shards = sorted({inside(path, name, "shard", index) for name in weight_map.values()})
        for shard in shards:
            if not shard.is_file():
                raise LightftError(f"{index}: names shard {shard.name} which is missing from {path}")
        return shards
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    hint = " (pickled .bin weights are never loaded: convert them to safetensors)" if (path / "pytorch_model.bin").exists() else ""
    raise LightftError(f"{path}: missing model.safetensors or model.safetensors.index.json{hint}; found: {found}")


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise LightftError(f"{file}: not a readable safetensors file ({e}); the file is truncated or corrupt, "
                           "re-download or re-export it") from None


def _read_tensor(f, file: Path, key: str, transform: Optional[str]) -> torch.Tensor:
    """One tensor of an open safetensors file, in lightft's layout (the key map's transform)."""
    try:
        return apply_transform(f.get_tensor(key), transform)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise LightftError(f"{file}: tensor {key} cannot be read ({e}); the file is corrupt") from None


def _file_tensors(file: Path, stream: bool) -> Iterator[tuple[str, Callable[[], torch.Tensor]]]:
    """(key, read) for every tensor of a safetensors file.

    Normally one memory map serves all reads (zero-copy). `stream`: each read maps the file anew and
    copies its tensor out, so no mapping outlives the read and the pages of tensors the caller drops
    are not kept resident.
    """
    with _open(file) as f:
        keys = list(f.keys())
        if not stream:
            for key in keys:
                yield key, functools.partial(f.get_tensor, key)
            return

    def read(key: str) -> torch.Tensor:
        with _open(file) as g:
            return g.get_tensor(key).clone()

    for key in keys:
        yield key, functools.partial(read, key)


def load_model(
    model_dir: PathLike,
    dtype: Union[str, torch.dtype, None] = "float32",
    device: Union[str, torch.device] = "cpu",
    strict: bool = True,
    take: Optional[Callable[[Transformer, str, torch.Tensor, torch.dtype], bool]] = None,
) -> Transformer:
    """Load a Hugging Face-layout folder into lightft's `Transformer`.

    The model comes back in eval mode (dropout off), as `transformers` does, so inference right after
    loading is deterministic; Lightning switches it to train mode for fitting.
    `strict=False` returns the model even when the report has problems (for `inspect`). Where the
    weights came from, with the report of every key, is the model's `source` (a `ModelSource`).

    `take(model, name, tensor, dtype)` sees each tensor as it is read (lightft name, still in the
    checkpoint's own precision so that a quantiser works from the exact values, not from a copy rounded
    to `dtype`; the model still on `meta`). Returning True means it took the tensor, e.g. replaced the
    layer that owns it by a quantised one (lightft.quant), and the loader keeps nothing of it. With `take`, every tensor
    is read through its own short-lived memory map and copied out, so the file's pages do not all
    stay resident: a model quantised while loading never holds its full-precision weights at once.
    """
    model_dir = Path(model_dir)
    cfg = read_model_config(model_dir)
    family = family_for(cfg.hf_config)
    files = weight_files(model_dir)
    dtype = parse_dtype(dtype)
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items()}
    report, state, prefixes = LoadReport(), {}, set()
    taken: set[str] = set()
    for file in files:
        for key, read in _file_tensors(file, stream=take is not None):
            mapped = family.KEY_MAP.to_lightft(key)
            if mapped is None or mapped[0] not in expected:
                (report.ignored if family.KEY_MAP.is_ignored(key) else report.unexpected).append(key)
                continue
            name, transform = mapped
            if name == "lm_head.weight" and cfg.tie_embeddings:
                report.ignored.append(key)  # the tied head is the embedding; a saved copy adds nothing
                continue
            try:
                tensor = apply_transform(read(), transform)
            except (SafetensorError, OSError, RuntimeError) as e:
                raise LightftError(f"{file}: tensor {key} cannot be read ({e}); the file is corrupt") from None
            if expected[name].is_floating_point() and not tensor.is_floating_point():
                raise LightftError(f"{file}: tensor {excerpt(key, 80)} holds {str(tensor.dtype).replace('torch.', '')}"
                                   " values; model weights must be floating point (re-export the checkpoint)")
            if tuple(tensor.shape) != tuple(expected[name].shape):
                report.mismatched.append(
                    f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(expected[name].shape)}")
                continue
            if not name.startswith("lm_head."):  # HF keeps the head outside the base model's prefix
                prefixes.add(family.KEY_MAP.strip_prefix(key)[0])
            report.loaded += 1
            if take is not None and take(model, name, tensor, dtype):
                taken.add(name)
            else:
                state[name] = tensor.to(dtype=dtype) if tensor.is_floating_point() else tensor
    for name in expected:
        if name in state or name in taken or (name == "lm_head.weight" and cfg.tie_embeddings):
            continue
        if name.startswith(OPTIONAL_PARAMS):
            report.initialised.append(name)
        else:
            report.missing.append(name)
    if strict and report.problems():
        shown = "; ".join(report.problems()[:3])
        more = f" (+{len(report.problems()) - 3} more)" if len(report.problems()) > 3 else ""
        raise LightftError(f"{model_dir}: checkpoint does not match its config.json: {shown}{more}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    _materialise_rest(model, dtype)
    model.reset_buffers()
    model.to(device)
    model.eval()
    model.source = ModelSource(path=str(model_dir.resolve()), family=cfg.family,
                               model_type=str(cfg.hf_config.get("model_type")),
                               prefix=prefixes.pop() if len(prefixes) == 1 else "",
                               dtype=str(dtype).replace("torch.", ""), report=report)
    return model


def read_extra_weights(model_dir: PathLike, namespace: str) -> dict[str, torch.Tensor]:
    """The checkpoint tensors that the family's key map places under `namespace` (e.g. "mlm_head."),
    by their names without it: weights of pre-training heads that live outside the `Transformer`,
    read through the same key map (prefixes, transposes) as the model's own. Empty when there are none.
    """
    family = family_for(read_model_config(model_dir).hf_config)
    found: dict[str, torch.Tensor] = {}
    for file in weight_files(model_dir):
        with _open(file) as f:
            for key in f.keys():
                mapped = family.KEY_MAP.to_lightft(key)
                if mapped is None or not mapped[0].startswith(namespace):
                    continue
                found[mapped[0][len(namespace):]] = _read_tensor(f, file, key, mapped[1])
    return found


def _materialise_rest(model: Transformer, dtype: torch.dtype) -> None:
    """Give real storage to parameters the checkpoint did not hold (optional ones, or strict=False).

    Their values are drawn from a generator seeded by the parameter's name, never from torch's global
    random state: every load of the same folder gives the same pooler, so a LoRA run (whose frozen
    pooler is not saved) is evaluated with the pooler it was trained with.
    """
    for mname, module in model.named_modules():
        for pname, p in list(module.named_parameters(recurse=False)):
            if p.device.type == "meta":
                fresh = torch.empty(p.shape, dtype=dtype)
                seed = zlib.crc32(f"{mname}.{pname}".encode())
                if fresh.dim() > 1:
                    fresh.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
                else:
                    torch.nn.init.zeros_(fresh)
                if pname == "weight" and isinstance(module, torch.nn.LayerNorm):
                    torch.nn.init.ones_(fresh)
                setattr(module, pname, torch.nn.Parameter(fresh, requires_grad=p.requires_grad))


def hf_state_dict(model: Transformer, prefix: Optional[str] = None,
                  state: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """The model's weights under the family's own checkpoint names and layouts (inverse key map).

    `prefix` defaults to the one the weights were loaded with, so an export has the input's keys.
    `state` (lightft names) replaces `model.state_dict()`, e.g. with LoRA updates merged in.
    """
    family = family_for(model.cfg.hf_config)
    if prefix is None:
        prefix = model.source.prefix if model.source is not None else ""
    out = {}
    for name, tensor in (model.state_dict() if state is None else state).items():
        if name == "lm_head.weight" and model.cfg.tie_embeddings:
            continue
        mapped = family.KEY_MAP.to_checkpoint(name, prefix)
        assert mapped is not None, f"no checkpoint name for {name}: extend the family's KEY_MAP"
        key, transform = mapped
        out[key] = apply_transform(tensor.detach(), transform).contiguous()
    return out


def save_checkpoint(model: Transformer, out_dir: PathLike, dtype: Union[str, torch.dtype, None] = None,
                    prefix: Optional[str] = None, state: Optional[dict[str, torch.Tensor]] = None,
                    extra: Optional[dict[str, torch.Tensor]] = None,
                    config: Optional[dict[str, Any]] = None) -> None:
    """Write config.json + model.safetensors in the family's HF layout (atomically, via a temp file).

    `state` (lightft names) is written instead of the model's own weights when given. `extra` are
    tensors already under checkpoint names (a task head, see lightft/task_heads.py) and `config`
    keys are set in config.json over the model's own (e.g. `architectures`, `id2label`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {**hf_state_dict(model, prefix, state), **(extra or {})}
    if dtype is not None:
        target = parse_dtype(dtype)
        state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    hf = {**model.cfg.hf_config, **(config or {})}
    any_float = next((v for v in state.values() if v.is_floating_point()), None)
    if any_float is not None:
        hf["torch_dtype"] = str(any_float.dtype).replace("torch.", "")
        hf["dtype"] = hf["torch_dtype"]
    write_atomic_json(out / "config.json", hf)
    write_atomic_safetensors(out / "model.safetensors", {k: v.contiguous() for k, v in state.items()},
                             metadata={"format": "pt"})


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: PathLike) -> None:
    """Give `path` the mode a plain open() / mkdir() would: 0666 / 0777 less the umask.

    safetensors writes its files 0600 (and `tempfile.mkdtemp` makes 0700 folders); outputs of lightft
    follow the user's umask like the JSON files beside them.
    """
    p = Path(path)
    os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_file(path: Path, tmp: Optional[Path] = None, name: Optional[str] = None,
                durable: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write (`tmp`, default `path.tmp-PID`); when the body
    ends, rename it onto `path`: a reader never sees half a file.

    The one way lightft replaces a file (checkpoints, JSON, safetensors, and through
    lightft/runs/safe_output.py every output file). A kill at any moment leaves the old file or the
    new one: the rename alone promises that. A full disk or a read-only folder is one line naming the
    file (`name`, default the path); the temporary file is removed and the old file, if any, is kept.
    `durable` also fsyncs the data before the rename and the folder after it, so the new file survives
    a power loss too; that costs about a second per few hundred MB, so a writer may skip it for a file
    nothing resumes from (best.ckpt: lightft/train/checkpointing.py).
    """
    tmp = tmp or path.with_name(f"{path.name}.tmp-{os.getpid()}")
    name = name or str(path)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error type
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:160] or type(e).__name__
        raise LightftError(f"{name}: cannot write ({reason}); nothing was replaced") from None
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        sync_folder(path.parent)  # make the rename itself durable


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename inside it survives a power cut (best effort: not every system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], None], durable: bool = True) -> None:
    """`write(tmp)` through `atomic_file`: the complete new file replaces `path`, or nothing changes."""
    with atomic_file(path, durable=durable) as tmp:
        write(tmp)


def write_atomic_safetensors(path: Path, tensors: dict[str, torch.Tensor],
                             metadata: Optional[dict[str, str]] = None) -> None:
    """safetensors written to `path.tmp-PID`, then renamed: a reader never sees half a file (mode from the umask)."""

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        public_mode(tmp)

    write_atomic(path, write)


def write_atomic_json(path: Path, data: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")

    write_atomic(path, write)


def load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "") -> None:
    """Load a partial state dict (e.g. a run's trained tensors): every key must exist in `module` with
    the same shape, so weights of another model or adapter layout are an error, not silently skipped."""
    own = module.state_dict()
    for key, tensor in state.items():
        if key not in own:
            raise LightftError(f"{source}: weight {key} does not fit this model (was it trained with other "
                               "--lora-targets or another base model?)")
        if own[key].shape != tensor.shape:
            raise LightftError(f"{source}: weight {key} has shape {tuple(tensor.shape)}, the model expects "
                               f"{tuple(own[key].shape)}")
    module.load_state_dict(state, strict=False)
