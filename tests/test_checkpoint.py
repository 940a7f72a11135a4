"""Export keeps a checkpoint's own key names (prefix included) next to a top-level LM head."""

from __future__ import annotations

import pytest

from lightft import load_model
from lightft.checkpoint import hf_state_dict


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_untied_head_keeps_base_prefix(hf_folder, family):
    hf_model, path = hf_folder(family, tie_word_embeddings=False)
    assert set(hf_state_dict(load_model(path))) == set(hf_model.state_dict())
