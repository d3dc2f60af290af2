"""Shared test set-up: one torch thread (small ops are erratic with intra-op threading on 2
cores) and small shared fixtures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture
def make_checkpoint():
    """A function ``path -> encoder`` that writes a real ``train_value.py`` checkpoint of a
    fresh (untrained) agent at ``path`` and returns the agent's encoder."""

    def make(path):
        from dataclasses import replace

        from agents.train_utils import build_agent, make_optimizer, save_checkpoint
        from agents.train_value import Args
        from imgmdp_env.datasets import make_dataset

        args = replace(Args(), dataset_size=4, base_batch=4)
        ds = make_dataset("scenes", n=4, size=64, seed=0)
        torch.manual_seed(0)
        agent, sampler = build_agent(args, {"base": ds, "boot": ds})
        optimizer, scaler = make_optimizer(args, agent, None)
        save_checkpoint(path, args, agent, optimizer, scaler, sampler, 0)
        return agent.encoder

    return make
