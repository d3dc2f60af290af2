"""The annotation bootstrapping agent (Ghosh & Levine 2025) on the image view MDP.

- :mod:`agents.method.encoders`: encoders that return tokens (``make_encoder``; torch only).
- :mod:`agents.method.networks`: the annotation decoder, projection heads and learned temperatures.
- :mod:`agents.evaluation.export`: a trained encoder as ``model.safetensors`` + ``config.json`` and
its
  loader (``load_encoder``), which imports none of the training code.
- :mod:`agents.method.losses`: SimCLR / CLIP / DINO base losses and the bootstrapping target.
- :mod:`agents.method.text`: the caption tokenizer and text encoder (CLIP base).
- :mod:`agents.method.data`: training batches from the environment's dynamics.
- :mod:`agents.method.ab`: the agent (online + EMA target), ``load_encoder`` for downstream use.
- :mod:`agents.evaluation.probes`: frozen-feature probes (linear, kNN, attentive).
- :mod:`agents.evaluate`: the probe protocol (fixed sets, random-init twins, raw pixels) and the
  value-accuracy diagnostic; ``agents/train_value.py``: the training CLI.
- :mod:`agents.infra.distributed`: torchrun / DDP training (ranks, the loss module DDP wraps, the
  collectives of the loop).
"""

from __future__ import annotations

import importlib

# Lazy (PEP 562): ``import agents.evaluation.export`` (loading a trained encoder) must not import
# the
# training code (agents.method.ab, agents.method.data, ..., gymnasium); ``from agents import
# ABAgent`` still
# works and imports what it names on first use.
_HOME = {
    "ABAgent": "agents.method.ab", "ABConfig": "agents.method.ab", "load_agent": "agents.method.ab",
    "load_encoder": "agents.method.ab", "Batch": "agents.method.data",
    "TransitionSampler": "agents.method.data",
    "simclr_augment": "agents.method.data", "value_accuracy_by_iou": "agents.evaluate",
    "AnnotationDecoder": "agents.method.networks", "Encoder": "agents.method.encoders",
    "make_encoder": "agents.method.encoders",
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
