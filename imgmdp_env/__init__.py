"""imgmdp_env: the image view MDP (``ImageView-v0``) as a natively batched Gymnasium env.

    >>> import gymnasium as gym, imgmdp_env  # importing registers ImageView-v0
    >>> env = gym.make("ImageView-v0", dataset="scenes")
    >>> envs = gym.make_vec("ImageView-v0", num_envs=256, dataset="scenes")
"""

from gymnasium.envs.registration import register

from imgmdp_env.actions import action_to_relative, relative_to_action
from imgmdp_env.datasets import ImageDataset, make_dataset
from imgmdp_env.env import ImageViewVectorEnv
from imgmdp_env.single_env import ImageViewEnv
from imgmdp_env.vector_attrs import vector_call, vector_get_attr, vector_set_attr
from imgmdp_env.views import (
    ImageBank,
    apply_relative,
    box_iou,
    box_tokens,
    clamp_boxes,
    relative_box,
    render_views,
    sample_boxes,
)

__all__ = [
    "ImageBank",
    "ImageDataset",
    "ImageViewEnv",
    "ImageViewVectorEnv",
    "action_to_relative",
    "relative_to_action",
    "apply_relative",
    "box_iou",
    "box_tokens",
    "clamp_boxes",
    "make_dataset",
    "relative_box",
    "render_views",
    "sample_boxes",
    "vector_call",
    "vector_get_attr",
    "vector_set_attr",
]

register(
    id="ImageView-v0",
    entry_point="imgmdp_env.single_env:ImageViewEnv",
    vector_entry_point="imgmdp_env.env:ImageViewVectorEnv",
    max_episode_steps=50,
)
