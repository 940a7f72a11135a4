"""Export keeps a checkpoint's own key names (prefix included) next to a top-level LM head."""

from __future__ import annotations

import pytest

from lightft import load_model
from lightft.checkpoint import hf_state_dict


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_untied_head_keeps_base_prefix(hf_folder, family):
    hf_model, path = hf_folder(family, tie_word_embeddings=False)
    assert set(hf_state_dict(load_model(path))) == set(hf_model.state_dict())


def test_loaded_model_is_in_eval_mode(hf_folder):
    """Dropout must be off after loading (checkpoints such as MiniLM declare hidden_dropout_prob=0.1)."""
    import torch

    _, path = hf_folder("bert", hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    model = load_model(path)
    assert not model.training
    ids = torch.randint(3, 99, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).hidden_states, model(ids).hidden_states, rtol=0, atol=0)
