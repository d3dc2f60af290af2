"""Shared test set-up: one torch thread (small ops are erratic with intra-op threading on 2
cores) and small shared fixtures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _sb3_logdir(tmp_path_factory):
    """SB3 makes a ``SB3-<time>`` folder in the system temp dir for every model that logs to
    stdout; point it into pytest's own temp tree, which pytest prunes, so the suite leaves
    nothing behind in /tmp."""
    old = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))
    yield
    if old is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = old


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


@pytest.fixture
def make_checkpoint():
    """A function ``path, **flags -> encoder`` that writes a real ``train_value.py`` checkpoint
    of a fresh (untrained) agent at ``path`` (``flags``: ``Args`` fields, e.g. ``base="clip"``)
    and returns the agent's encoder."""

    def make(path, **flags):
        from tests.helpers import write_checkpoint

        return write_checkpoint(path, **flags).encoder

    return make
