"""The annotation bootstrapping agent (Ghosh & Levine 2025) on the image view MDP.

- :mod:`agents.networks`: encoders that return tokens (``make_encoder``), the annotation
  decoder, projection heads and learned temperatures.
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

from agents.ab import ABAgent, ABConfig, load_agent, load_encoder
from agents.data import Batch, TransitionSampler, simclr_augment
from agents.evaluate import value_accuracy_by_iou
from agents.networks import AnnotationDecoder, Encoder, make_encoder

__all__ = [
    "ABAgent",
    "ABConfig",
    "AnnotationDecoder",
    "Batch",
    "Encoder",
    "TransitionSampler",
    "load_agent",
    "load_encoder",
    "make_encoder",
    "simclr_augment",
    "value_accuracy_by_iou",
]
