"""Lesson 1: a checkpoint is a dict of named tensors; a key map turns its names into lightft modules and back.

    python scripts/tour/01_checkpoint.py

What you will see: the bytes of a model.safetensors file read by hand (a JSON header, then raw
numbers), the same dict loaded by `safetensors`, each Hugging Face name mapped onto a lightft module
path by the family's KEY_MAP, and the way back (writing a checkpoint). GPT-2 shows the one twist:
its Conv1D layers store weights transposed.
Source: lightft/checkpoint.py (load_model, hf_state_dict, save_checkpoint), lightft/keymap.py,
lightft/families/{llama,gpt2}.py (the KEY_MAP tables).
"""

# %% Setup: a tiny random Llama, saved as a Hugging Face folder
import json
import struct
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

import tourkit
from lightft.checkpoint import hf_state_dict, load_model, save_checkpoint
from lightft.families import family_for
from lightft.keymap import apply_transform

model = tourkit.tiny_model("llama")
folder = Path(tempfile.mkdtemp(prefix="tour01-"))
save_checkpoint(model, folder, prefix="model.")  # config.json + model.safetensors, named as HF names them
print("files:", sorted(p.name for p in folder.iterdir()))

# %% 1. The file by hand: 8 bytes of header length, a JSON header, then the tensors' raw bytes
tourkit.title("model.safetensors, read by hand")
raw = (folder / "model.safetensors").read_bytes()
(header_len,) = struct.unpack("<Q", raw[:8])  # little-endian unsigned 64-bit integer
header = json.loads(raw[8 : 8 + header_len])
header.pop("__metadata__", None)
print(f"{len(raw)} bytes; header {header_len} bytes; {len(header)} tensors")
for name in list(header)[:4]:
    print(f"  {name:45s} {header[name]}")
name = "model.layers.0.self_attn.k_proj.weight"
info = header[name]
begin, end = info["data_offsets"]
by_hand = torch.frombuffer(bytearray(raw[8 + header_len + begin : 8 + header_len + end]), dtype=torch.float32)
by_hand = by_hand.reshape(info["shape"])
tourkit.show(f"{name}, from the bytes", by_hand[:2, :6])

# %% 2. The same thing through safetensors: a plain dict {name: tensor}
state = load_file(str(folder / "model.safetensors"))
print(f"\nload_file -> {type(state).__name__} of {len(state)} tensors")
torch.testing.assert_close(state[name], by_hand)  # the library reads exactly those bytes
assert set(state) == set(header)

# %% 3. Names: the family's KEY_MAP takes each checkpoint name to a lightft module path
tourkit.title("Hugging Face name -> lightft name (llama KEY_MAP)")
key_map = family_for(model.cfg.hf_config).KEY_MAP
rows = []
for hf_name in sorted(state, key=lambda k: (k.count("layers.1"), k)):
    ours, transform = key_map.to_lightft(hf_name)
    rows.append((hf_name, "->", ours, tuple(state[hf_name].shape), transform or ""))
tourkit.table(rows[:12], ("checkpoint key", "", "lightft key", "shape", "transform"))
print(f"... {len(rows)} keys in all")
# Every checkpoint key lands on a real parameter of the model, and the map runs backwards exactly.
ours_state = model.state_dict()
for hf_name, _, ours, _, _ in rows:
    assert ours in ours_state, ours
    back, _ = key_map.to_checkpoint(ours, prefix="model.")
    assert back == hf_name, (hf_name, back)
# Tied embeddings: the LM head *is* the token embedding, so the file stores it once.
assert model.lm_head.weight is model.embed_tokens.weight and "lm_head.weight" not in state

# %% 4. Loading = mapping names + copying tensors; saving = the same table read backwards
loaded = tourkit.reference(load_model(folder))
print(f"\nload_model: {loaded.source.report.summary()}")
for key, tensor in model.state_dict().items():
    torch.testing.assert_close(loaded.state_dict()[key], tensor)  # every tensor came back unchanged
exported = hf_state_dict(loaded)
assert set(exported) == set(state)
for key in state:
    torch.testing.assert_close(exported[key], state[key])
print("load -> export gives back the file's names and values exactly")

# %% 5. GPT-2's twist: Conv1D stores (in, out), nn.Linear wants (out, in): the map marks it "T"
tourkit.title("GPT-2: the same dict idea, one transposed layout")
gpt2 = tourkit.tiny_model("gpt2")
gpt2_state = hf_state_dict(gpt2, prefix="transformer.")
gpt2_map = family_for(gpt2.cfg.hf_config).KEY_MAP
for hf_name in ("transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.ln_1.weight"):
    ours, transform = gpt2_map.to_lightft(hf_name)
    mine = gpt2.state_dict()[ours]
    print(f"{hf_name:38s} {tuple(gpt2_state[hf_name].shape)!s:10s} -> {ours:30s} {tuple(mine.shape)!s:10s} "
          f"transform={transform}")
    torch.testing.assert_close(apply_transform(gpt2_state[hf_name], transform), mine)
# c_attn holds q, k and v side by side: lightft keeps it fused as qkv_proj, (3 * hidden, hidden).
assert gpt2.layers[0].attn.qkv_proj.weight.shape == (3 * 16, 16)
print("\nLesson 1 done: a checkpoint is {name: tensor}; a table of names is all that ties it to the model.")
