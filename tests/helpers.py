"""Helpers shared by several test modules. Test modules never import each other: what two of
them share lives here and is imported as ``from tests.helpers import ...``, which works from
any directory (``pythonpath = ["."]`` in pyproject's pytest settings puts the repository root
on ``sys.path``)."""

import torch

from imgmdp_env.datasets import make_dataset

VIEW = 32  # the view size of tiny_agent's agents


def tiny_agent(base="simclr"):
    """A tiny untrained agent (``base``: simclr / clip / dino) at view size :data:`VIEW`, in
    eval mode, and its 4-image scenes dataset."""
    from agents.infra.config import with_flags
    from agents.infra.train_utils import build_agent
    from agents.train_value import Args

    args = with_flags(Args(), base=base, dataset_size=4, base_batch=4, view_size=VIEW,
                      proj_dim=16, proj_hidden=32, decoder_width=16, decoder_depth=1,
                      n_prototypes=16)
    ds = make_dataset("scenes", n=4, size=48, seed=0)
    torch.manual_seed(0)
    agent, _ = build_agent(args, {"base": ds, "boot": ds})
    return agent.eval(), ds


def write_checkpoint(path, **flags):
    """Write a real ``train_value.py`` checkpoint of a fresh (untrained, 64 px) agent at
    ``path`` (``flags``: ``Args`` fields, e.g. ``base="clip"``); returns the agent."""
    from agents.infra.config import with_flags
    from agents.infra.train_utils import build_agent, make_optimizer, save_checkpoint
    from agents.train_value import Args

    args = with_flags(Args(), dataset_size=4, base_batch=4, **flags)
    ds = make_dataset("scenes", n=4, size=64, seed=0)
    torch.manual_seed(0)
    agent, sampler = build_agent(args, {"base": ds, "boot": ds})
    save_checkpoint(path, args, agent, *make_optimizer(args, agent, None), sampler, 0)
    return agent
