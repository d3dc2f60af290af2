"""The annotation bootstrapping agent (Ghosh & Levine 2025) on the image view MDP.

- :mod:`agents.encoders`: encoders that return tokens (``make_encoder``; torch only).
- :mod:`agents.networks`: the annotation decoder, projection heads and learned temperatures.
- :mod:`agents.export`: a trained encoder as ``model.safetensors`` + ``config.json`` and its
  loader (``load_encoder``), which imports none of the training code.
- :mod:`agents.losses`: SimCLR / CLIP / DINO base losses and the bootstrapping target.
- :mod:`agents.text`: the caption tokenizer and text encoder (CLIP base).
- :mod:`agents.data`: training batches from the environment's dynamics.
- :mod:`agents.ab`: the agent (online + EMA target), ``load_encoder`` for downstream use.
- :mod:`agents.probes`: frozen-feature probes (linear, kNN, attentive).
- :mod:`agents.evaluate`: the probe protocol (fixed sets, random-init twins, raw pixels) and the
  value-accuracy diagnostic; ``agents/train_value.py``: the training CLI.
- :mod:`agents.distributed`: torchrun / DDP training (ranks, the loss module DDP wraps, the
  collectives of the loop).
"""

from __future__ import annotations

import importlib

# Lazy (PEP 562): ``import agents.export`` (loading a trained encoder) must not import the
# training code (agents.ab, agents.data, ..., gymnasium); ``from agents import ABAgent`` still
# works and imports what it names on first use.
_HOME = {
    "ABAgent": "agents.ab", "ABConfig": "agents.ab", "load_agent": "agents.ab",
    "load_encoder": "agents.ab", "Batch": "agents.data", "TransitionSampler": "agents.data",
    "simclr_augment": "agents.data", "value_accuracy_by_iou": "agents.evaluate",
    "AnnotationDecoder": "agents.networks", "Encoder": "agents.encoders",
    "make_encoder": "agents.encoders",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agents' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
