"""ImageView-v0: the view MDP of an image, natively batched.

A state is a view of an image: the crop at a box, resized to ``view_size``. An action is the
relative box of the next view in the current view's frame (the paper's ``bb_{1->2}``), reached
through a bounded continuous parameterisation; the transition crops the same image at the new
box. The bare environment pays no reward: reward wrappers in :mod:`imgmdp_env.rewards` pay the
likelihood of an annotation for the new view.

:class:`ImageViewVectorEnv` keeps the state of all sub-environments as tensors and steps them
with one call of the crop kernel; :class:`~imgmdp_env.single_env.ImageViewEnv` is a thin
single-env adaptor over the same core (``num_envs=1``).

With ``device=...`` (opt-in; e.g. ``gym.make_vec("ImageView-v0", num_envs=4096,
device="cuda")``) the env keeps its state and image bank on that device, renders there (the
portable torch path of :func:`~imgmdp_env.views.render_views_unchecked`; the numba kernel on the
CPU) and speaks torch: observations, rewards, dones and info tensors on the device. The random
streams stay on CPU generators (drawn on the CPU, then moved), so ``device="cpu"`` returns
exactly the numpy API's values as tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from imgmdp_env import checks as check
from imgmdp_env.actions import BOX_ACTIONS, action_to_relative
from imgmdp_env.datasets.cache import cached_dataset
from imgmdp_env.vector_attrs import VectorAttrs
from imgmdp_env.views import (
    apply_relative,
    clamp_boxes,
    render_views,
    render_views_unchecked,
    sample_boxes,
)

__all__ = ["RESET_OPTIONS", "ImageViewVectorEnv", "refuse_device"]

AUG_ACTIONS = 4  # flip, rot90, brightness, saturation


RESET_OPTIONS = ("box", "image_index", "reset_mask")
_IMPORTED_IN = os.getpid()  # the process that imported this module (see _forked_child_threads)


def _forked_child_threads() -> None:
    """Run torch on one thread in a process forked from the one that imported this module.

    ``gym.make_vec(..., vectorization_mode="async")`` builds each sub-env in a worker forked
    from the caller (``AsyncVectorEnv``'s default start method on Linux, ``fork``). If the
    caller had run a multi-threaded torch op (e.g. stepped a native env of a few views),
    OpenMP's thread pool does not survive the fork, and the worker's first multi-threaded op
    (filling the view buffer) waits forever for threads that do not exist: the classic
    fork-after-OpenMP hang (``OMP_NUM_THREADS=1`` hid it). A worker runs one env on one core,
    so one thread costs nothing; processes started by ``spawn`` / ``forkserver`` import this
    module themselves and are left alone (as is a worker that already runs one thread)."""
    if os.getpid() != _IMPORTED_IN and torch.get_num_threads() > 1:
        torch.set_num_threads(1)


class ImageViewVectorEnv(VectorAttrs, VectorEnv):
    """The view MDP over a dataset of images, ``num_envs`` sub-environments stepped at once.

    Observation: the view, uint8 ``Box(0, 255, (3, h, w))`` per sub-env; with
    ``obs_mode="dict"``, ``{"view": ..., "box": Box(4,) float32}`` (the absolute box; the
    paper's agent never sees it, but goal-reaching agents may want it).
    Action: ``Box(-1, 1, (4,))`` mapped by :func:`~imgmdp_env.actions.action_to_relative`
    (plus 4 augmentation dimensions with ``augment=True``: flip if ``a[4] > 0``; rotate by
    ``k * 90`` degrees counter-clockwise, ``k = round(2 * a[5]) mod 4``; brightness
    ``x 2 ** a[6]``; saturation ``x (1 + a[7])``, ``-1`` = grayscale). Augmentations apply to
    the next view only; the box dynamics do not depend on them. Actions outside the space are
    clipped; NaN/inf raise.
    The next box is projected by :func:`~imgmdp_env.views.clamp_boxes` onto sizes
    ``[min_size, 1 + 2 * margin]`` and edges within ``margin`` of the image; outside the image
    the view shows ``fill``.
    Reward: 0 (reward wrappers pay annotation likelihoods). Never terminates; truncates after
    ``max_episode_steps``. ``info`` holds ``image_index`` ``(N,)`` and ``box`` ``(N, 4)``.
    ``call`` / ``get_attr`` / ``set_attr`` answer as ``SyncVectorEnv``'s (one entry per
    sub-env; per-sub-env attributes ``image_index``, ``box``): see :mod:`imgmdp_env.vector_attrs`.
    The reward is float64 ``(N,)``, as ``SyncVectorEnv``'s.

    Args:
        num_envs: number of sub-environments.
        dataset: anything :func:`imgmdp_env.datasets.make_dataset` accepts (default: the
            embedded procedural ``"scenes"``); ``dataset_kwargs`` are passed to it.
        view_size: ``h`` or ``(h, w)`` of a view in pixels.
        max_episode_steps: truncation horizon (``None``: never).
        init_scale, init_ratio: area fraction and aspect range of the initial random box.
        max_pan, max_zoom: per-step bounds of the action
            (:func:`~imgmdp_env.actions.action_to_relative`).
        min_size, margin: the allowed boxes (see above).
        augment: add the 4 augmentation action dimensions.
        obs_mode: ``"view"`` or ``"dict"``.
        antialias: sample views from the image pyramid (see :func:`render_views`).
        fill: RGB colour outside the image.
        autoreset_mode: a :class:`gymnasium.vector.AutoresetMode` (or its value string).
        render_mode: ``None`` or ``"rgb_array"``.
        device: ``None`` (default): the numpy API above. A torch device (``"cuda"``, ``"cpu"``,
            ...): the torch API. The image bank and the state (image indices, boxes, steps)
            live on the device, views are rendered there, ``step`` takes actions as torch
            tensors (any device) or numpy, and returns the observation (``(N, 3, h, w)`` uint8,
            or the dict of it and the ``(N, 4)`` float32 box), the reward (``(N,)`` float32),
            terminations / truncations (``(N,)`` bool) and the info's ``image_index``
            ``(N,)`` int64 / ``box`` ``(N, 4)`` float32 (and their ``_`` masks, bool) as torch
            tensors on the device. Under ``SAME_STEP`` ``info["final_obs"]`` is the batched
            observation before the resets (its rows ``info["_final_obs"]`` are the finished
            episodes' last views; Gymnasium's object array of rows would be numpy) and
            ``final_info`` holds tensors too. Random draws use the same CPU generators as the
            numpy API, so ``device="cpu"`` gives its values exactly; on CUDA the box arithmetic
            may differ from the CPU's in the last float bit. One host sync per step (which
            sub-envs reset next: their draws are made on the CPU). The reward wrappers, the SB3
            adapter, the discrete-action wrapper and the single env (``gym.make``) do not yet
            support it and refuse a device env at construction.
    """

    per_env_attrs = ("image_index", "box")  # see imgmdp_env.vector_attrs
    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        dataset: Any = "scenes",
        dataset_kwargs: dict | None = None,
        view_size: int | tuple[int, int] = 64,
        max_episode_steps: int | None = 50,
        init_scale: tuple[float, float] = (0.1, 1.0),
        init_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        max_pan: float = 0.5,
        max_zoom: float = 2.0,
        min_size: float = 0.05,
        margin: float = 0.25,
        augment: bool = False,
        obs_mode: str = "view",
        antialias: bool = True,
        fill: Sequence[int] = (0, 0, 0),
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        _forked_child_threads()  # an AsyncVectorEnv worker forked from a torch process
        # Every argument is checked before any work (the dataset is built last).
        num_envs = check.integer("num_envs", num_envs, 1)
        dataset_kwargs = check.mapping("dataset_kwargs", dataset_kwargs)
        self.view_size = check.size_hw("view_size", view_size)
        max_episode_steps = check.optional_integer("max_episode_steps", max_episode_steps, 1)
        self.init_scale = check.number_range("init_scale", init_scale, 0, 1, lo_open=True)
        self.init_ratio = check.number_range("init_ratio", init_ratio, 0, lo_open=True)
        self.max_pan = check.number("max_pan", max_pan, 0, lo_open=True)
        self.max_zoom = check.number("max_zoom", max_zoom, 1)
        self.min_size = check.number("min_size", min_size, 0, 1, lo_open=True)
        self.margin = check.number("margin", margin, 0)
        augment = check.flag("augment", augment)
        obs_mode = check.choice("obs_mode", obs_mode, ("view", "dict"))
        antialias = check.flag("antialias", antialias)
        fill = check.colour("fill", fill)
        render_mode = check.choice("render_mode", render_mode,
                                   (None, *self.metadata["render_modes"]))
        if augment and self.view_size[0] != self.view_size[1]:
            raise ValueError(f"augment=True rotates views: view_size {view_size} must be square")
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.device = _device(device)
        dev = self.device or torch.device("cpu")
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}

        self.num_envs = num_envs
        self.dataset = cached_dataset(dataset, dataset_kwargs)
        self.bank = self.dataset.bank(levels=4 if antialias else 1, fill=fill)
        if self.device is not None:
            self.bank = self.bank.to(self.device)  # once: every render reads it there
        self.max_episode_steps = max_episode_steps
        self.augment, self.obs_mode, self.antialias = augment, obs_mode, antialias
        self.render_mode = render_mode
        margin = self.margin

        h, w = self.view_size
        view_space = spaces.Box(0, 255, (3, h, w), np.uint8)
        if obs_mode == "dict":
            box_space = spaces.Box(-margin, 1 + 2 * margin, (4,), np.float32)
            self.single_observation_space = spaces.Dict({"view": view_space, "box": box_space})
        else:
            self.single_observation_space = view_space
        n_act = BOX_ACTIONS + (AUG_ACTIONS if augment else 0)
        self.single_action_space = spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        self.image_idx = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self.boxes = torch.zeros(num_envs, 4, device=dev)
        self.steps = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self.views = torch.zeros(num_envs, 3, h, w, dtype=torch.uint8, device=dev)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._started = np.zeros(num_envs, dtype=bool)  # sub-envs reset at least once
        self._generator: torch.Generator | None = None

    def _get_per_env(self, name: str) -> tuple[Any, ...]:
        if self.device is not None:  # the torch API: rows of the device tensors
            return tuple(self.image_idx.clone() if name == "image_index" else self.boxes.clone())
        if name == "image_index":
            return tuple(int(i) for i in self.image_idx)
        return tuple(self.boxes.numpy().copy())  # "box": (4,) float32 rows

    # ------------------------------------------------------------------ state changes
    def _draw(self, mask: torch.Tensor, options: dict | None) -> None:
        """Reset the sub-envs in ``mask`` (``(N,)`` bool, CPU): new image and initial box (or
        those in ``options``). Drawn on the CPU (the one random stream of both APIs), then
        moved to the state's device."""
        k = int(mask.sum())
        options = options or {}
        if "image_index" in options:
            idx = check.index_array("options['image_index']", options["image_index"],
                                    len(self.bank), [(), (1,), (self.num_envs,)])
            idx = torch.from_numpy(idx).expand(self.num_envs)[mask]
        else:
            idx = torch.randint(len(self.bank), (k,), generator=self._generator)
        if "box" in options:
            box = torch.from_numpy(_start_box(options["box"], self.num_envs))
            box = clamp_boxes(box.expand(self.num_envs, 4)[mask], self.min_size, self.margin)
        else:
            box = sample_boxes(k, self.init_scale, self.init_ratio, self.bank.aspect[idx],
                               generator=self._generator)
        if self.device is not None:
            mask, idx, box = mask.to(self.device), idx.to(self.device), box.to(self.device)
        self.image_idx[mask], self.boxes[mask], self.steps[mask] = idx, box, 0

    def _render_obs(self, mask: torch.Tensor | None = None, aug: torch.Tensor | None = None):
        # Always into a new tensor: an observation handed out is never written again (callers
        # may keep it), so _obs returns it without a copy; the env keeps it only for render().
        if mask is None:  # the step path: render straight into the new array
            views = torch.empty(self.views.shape, dtype=torch.uint8, device=self.views.device)
            render_views_unchecked(self.bank, self.image_idx, self.boxes, *self.view_size,
                                   self.antialias, views)  # valid by construction: no checks
            self.views = views if aug is None else _augment(views, aug)
            return
        mask = mask.to(self.views.device)
        views = render_views_unchecked(self.bank, self.image_idx[mask], self.boxes[mask],
                                       *self.view_size, self.antialias)
        self.views = self.views.clone()
        self.views[mask] = views if aug is None else _augment(views, aug[mask])

    def _obs(self) -> Any:
        if self.device is not None:  # the torch API: a new tensor every step, as below
            if self.obs_mode == "dict":
                return {"view": self.views, "box": self.boxes.clone()}
            return self.views
        views = self.views.numpy()  # a new array every step (see _render_obs)
        if self.obs_mode == "dict":
            return {"view": views, "box": self.boxes.numpy().copy()}
        return views

    def _info(self) -> dict[str, Any]:
        if self.device is not None:
            ones = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
            return {"image_index": self.image_idx.clone(), "_image_index": ones,
                    "box": self.boxes.clone(), "_box": ones.clone()}
        ones = np.ones(self.num_envs, dtype=bool)
        return {"image_index": self.image_idx.numpy().copy(), "_image_index": ones,
                "box": self.boxes.numpy().copy(), "_box": ones.copy()}

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset all sub-envs (or those in ``options["reset_mask"]``).

        options: ``image_index`` (int or ``(N,)``) and/or ``box`` (``(4,)`` or ``(N, 4)``
        cxcywh) fix the start state, e.g. for evaluation; ``reset_mask`` ``(N,)`` bool resets
        only those sub-envs (the way to reset in ``AutoresetMode.DISABLED``). With a ``device``
        they may be torch tensors (any device) as well as numpy arrays.
        """
        _forked_child_threads()  # an env built before a fork, reset in the child
        seed = check.seed("seed", seed)
        options = check.mapping("options", options)
        check.check_keys(f"{type(self).__name__}.reset options", options, RESET_OPTIONS,
                         " ('goal' is read by the reward wrappers of imgmdp_env.rewards)"
                         if "goal" in options else "")
        if self.device is not None:  # torch options are checked as the numpy they equal
            options = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v
                       for k, v in options.items()}
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"options['reset_mask'] must be a bool array of shape "
                             f"({self.num_envs},), got {mask.dtype} {mask.shape}")
        never = np.flatnonzero(~self._started & ~mask)
        if len(never):
            raise ValueError(f"options['reset_mask'] ({mask.tolist()}) leaves sub-env(s) "
                             f"{never.tolist()} that were never reset without a state: the first "
                             "reset must reset every sub-env (omit reset_mask)")
        super().reset(seed=seed)
        if seed is not None or self._generator is None:
            seed = int(self.np_random.integers(2**62)) if seed is None else seed
            self._generator = torch.Generator().manual_seed(seed)
        tmask = torch.from_numpy(mask)
        self._draw(tmask, options)
        self._render_obs(tmask)
        self._autoreset[mask] = False
        self._started |= mask
        return self._obs(), self._info()

    def step(self, actions: Any):
        """Step every sub-env. actions: ``(num_envs, A)`` in ``[-1, 1]`` (clipped); with a
        ``device``, a torch tensor (any device) or numpy."""
        if self._generator is None:
            raise RuntimeError("call reset() before step()")
        act = self._actions(actions)

        # Move all sub-envs (cheaper than masking); NEXT_STEP resets then overwrite theirs.
        rel = action_to_relative(act, self.max_pan, self.max_zoom)
        boxes = clamp_boxes(apply_relative(self.boxes, rel), self.min_size, self.margin)
        moving = ~self._autoreset
        aug = act[:, BOX_ACTIONS:] if self.augment else None
        if moving.all():
            self.boxes.copy_(boxes)
            self.steps += 1
        else:
            resetting = torch.from_numpy(~moving)
            keep = torch.from_numpy(moving).to(self.boxes.device)
            self.boxes[keep], self.steps[keep] = boxes[keep], self.steps[keep] + 1
            self._draw(resetting, None)
            if aug is not None:
                aug = torch.where(resetting.to(aug.device)[:, None], torch.zeros_like(aug), aug)
        self._render_obs(aug=aug)
        if self.device is not None:
            return self._step_torch(moving)

        reward = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is None:
            truncated = np.zeros(self.num_envs, dtype=bool)
        else:
            truncated = (self.steps >= self.max_episode_steps).numpy() & moving
        done = terminated | truncated
        obs, info = self._obs(), self._info()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            info = self._same_step_reset(done, obs, info)
            obs = self._obs()
        elif self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset = done
        return obs, reward, terminated, truncated, info

    def _step_torch(self, moving: np.ndarray):
        """The end of :meth:`step` in the torch API: the same values as tensors on the device.
        The one host sync: ``truncated`` to the CPU (which sub-envs reset next)."""
        n, dev = self.num_envs, self.device
        reward = torch.zeros(n, dtype=torch.float32, device=dev)
        terminated = torch.zeros(n, dtype=torch.bool, device=dev)
        if self.max_episode_steps is None:
            truncated, done = terminated.clone(), np.zeros(n, dtype=bool)
        else:
            truncated = (self.steps >= self.max_episode_steps) & torch.from_numpy(moving).to(dev)
            done = truncated.cpu().numpy()
        obs, info = self._obs(), self._info()
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            final_info = {k: v for k, v in info.items() if not k.startswith("_")}
            done_t = torch.from_numpy(done).to(dev)
            final_info.update({f"_{k}": done_t.clone() for k in list(final_info)})
            final_obs = obs  # never written again (see _render_obs)
            mask = torch.from_numpy(done)
            self._draw(mask, None)
            self._render_obs(mask)
            obs, info = self._obs(), self._info()
            info.update(final_obs=final_obs, _final_obs=done_t.clone(), final_info=final_info,
                        _final_info=done_t.clone())
        elif self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._autoreset = done
        return obs, reward, terminated, truncated, info

    def _actions(self, actions: Any) -> torch.Tensor:
        """``actions`` checked and clipped: ``(N, A)`` float32 on the state's device."""
        if self.device is not None and isinstance(actions, torch.Tensor):
            return self._torch_actions(actions)
        try:
            a = np.asarray(actions)
        except (TypeError, ValueError):  # ragged
            a = np.asarray(None)
        if a.dtype.kind not in "iuf":  # bools would read as 1.0 / 0.0, strings fail later
            raise TypeError(f"actions ({check.show(a.tolist())}) must be numbers in [-1, 1], not "
                            f"{a.dtype} values")
        a = a.astype(np.float32, copy=False)
        expected = (self.num_envs, *self.single_action_space.shape)
        if a.shape != expected:
            raise ValueError(f"actions have shape {a.shape}; expected {expected} "
                             "(num_envs, action dims)")
        if not np.isfinite(a).all():
            bad = ~np.isfinite(a).all(axis=1)
            raise ValueError(f"non-finite action (NaN or inf) for sub-env(s) "
                             f"{np.flatnonzero(bad).tolist()}: {a[bad].tolist()}")
        act = torch.from_numpy(np.clip(a, -1.0, 1.0))
        return act if self.device is None else act.to(self.device)

    def _torch_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Torch actions (device API): the checks of the numpy path, on the device."""
        if actions.dtype == torch.bool or actions.is_complex():
            raise TypeError(f"actions must be numbers in [-1, 1], not {actions.dtype} values")
        expected = (self.num_envs, *self.single_action_space.shape)
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected {expected} "
                             "(num_envs, action dims)")
        a = actions.detach().to(self.device, torch.float32)
        finite = torch.isfinite(a).all(dim=1)
        if not bool(finite.all()):  # a host sync, as numpy's check
            bad = (~finite).cpu()
            raise ValueError(f"non-finite action (NaN or inf) for sub-env(s) "
                             f"{torch.nonzero(bad).flatten().tolist()}: "
                             f"{a.cpu()[bad].tolist()}")
        return a.clamp(-1.0, 1.0)

    def _same_step_reset(self, done: np.ndarray, obs: Any, info: dict) -> dict:
        final_obs = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(done):  # per finished env, as Gymnasium lays out final_obs
            final_obs[i] = ({k: v[i] for k, v in obs.items()} if isinstance(obs, dict)
                            else obs[i])
        final_info = {k: v for k, v in info.items() if not k.startswith("_")}
        final_info.update({f"_{k}": done.copy() for k in list(final_info)})
        mask = torch.from_numpy(done)
        self._draw(mask, None)
        self._render_obs(mask)
        info = self._info()
        info.update(final_obs=final_obs, _final_obs=done.copy(), final_info=final_info,
                    _final_info=done.copy())
        return info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One ``rgb_array`` per sub-env: the image (with the allowed margin) and the view's
        box drawn on it, beside the current view, both ``display`` pixels high."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode='rgb_array'")
            return None
        return tuple(self.render_frames())

    def render_frames(self, display: int = 160) -> list[np.ndarray]:
        """``(display, W, 3)`` uint8 frames, one per sub-env (see :meth:`render`)."""
        from PIL import Image, ImageDraw

        display = check.integer("display", display, 1)
        if not self._started.all():
            raise RuntimeError("call reset() before render()")

        m = self.margin
        frames = []
        for i in range(self.num_envs):  # rendering is for people, not for throughput
            idx = self.image_idx[i : i + 1].cpu()
            aspect = float(self.bank.aspect[idx])
            hw = (display, max(1, round(display * aspect)))
            canvas = render_views(self.bank, idx, torch.tensor([[0.5, 0.5, 1 + 2 * m, 1 + 2 * m]]),
                                  hw)[0].permute(1, 2, 0).cpu().numpy()
            img = Image.fromarray(np.ascontiguousarray(canvas))
            draw = ImageDraw.Draw(img)
            cx, cy, bw, bh = self.boxes[i].tolist()
            to_px = lambda v, n: (v + m) / (1 + 2 * m) * n  # noqa: E731
            draw.rectangle([to_px(cx - bw / 2, hw[1]), to_px(cy - bh / 2, hw[0]),
                            to_px(cx + bw / 2, hw[1]), to_px(cy + bh / 2, hw[0])],
                           outline=(255, 64, 64), width=2)
            inner = [to_px(0, hw[1]), to_px(0, hw[0]), to_px(1, hw[1]), to_px(1, hw[0])]
            draw.rectangle(inner, outline=(128, 128, 128), width=1)
            view = Image.fromarray(self.views[i].permute(1, 2, 0).cpu().numpy())
            view = view.resize((round(display * self.view_size[1] / self.view_size[0]), display),
                               Image.NEAREST)
            frame = Image.new("RGB", (img.width + 4 + view.width, display), (255, 255, 255))
            frame.paste(img, (0, 0))
            frame.paste(view, (img.width + 4, 0))
            frames.append(np.asarray(frame))
        return frames

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        gen = state.pop("_generator")
        state["_generator_state"] = None if gen is None else gen.get_state()
        return state

    def __setstate__(self, state: dict) -> None:
        gen_state = state.pop("_generator_state")
        self.__dict__.update(state)
        self._generator = None
        if gen_state is not None:
            self._generator = torch.Generator()
            self._generator.set_state(gen_state)


def _autoreset_mode(mode: Any) -> AutoresetMode:
    try:
        return AutoresetMode(mode)
    except ValueError:
        valid = [m.value for m in AutoresetMode]
        raise ValueError(f"autoreset_mode ({mode!r}) must be an AutoresetMode or one of "
                         f"{valid}") from None


def _device(device: Any) -> torch.device | None:
    """The ``device`` argument: ``None`` (the numpy API) or a usable torch device."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError) as e:
        raise ValueError(f"device ({device!r}) must be None (the numpy API) or a torch device "
                         f"such as 'cpu' or 'cuda': {e}") from None
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise ValueError(f"device ({device!r}) is not available here: {e}") from None
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def refuse_device(core: ImageViewVectorEnv, what: str) -> None:
    """Raise if ``core`` runs the torch API (a ``device``): ``what`` (a wrapper, an option)
    speaks numpy and supports device mode not yet."""
    if getattr(core, "device", None) is not None:
        raise ValueError(f"{what} does not support device mode yet: this ImageView-v0 env was "
                         f"made with device={str(core.device)!r} (the torch API); make it "
                         "without device= (the numpy API) to use it")


def _start_box(value: Any, n: int) -> np.ndarray:
    """``options["box"]``: ``(4,)`` or ``(n, 4)`` finite numbers with positive sizes."""
    return check.box_array("options['box']", value, [(4,), (n, 4)])


def _augment(views: torch.Tensor, aug: torch.Tensor) -> torch.Tensor:
    """Apply per-view augmentation actions. views: ``(B, 3, h, h)`` uint8; aug: ``(B, 4)``."""
    if len(views) == 0:
        return views
    flip = aug[:, 0] > 0
    views = torch.where(flip[:, None, None, None], views.flip(-1), views)
    k = torch.round(aug[:, 1] * 2).long() % 4  # a = 0 keeps the view upright
    for r in (1, 2, 3):  # three masked rotations, not a loop over the batch
        sel = k == r
        if sel.any():
            views[sel] = torch.rot90(views[sel], r, dims=(-2, -1))
    x = views.float()
    luma = torch.tensor([0.299, 0.587, 0.114], device=views.device)
    gray = (x * luma[:, None, None]).sum(1, keepdim=True)
    sat = (1 + aug[:, 3])[:, None, None, None]
    x = gray + (x - gray) * sat
    x = x * torch.pow(2.0, aug[:, 2])[:, None, None, None]
    return x.round_().clamp_(0, 255).to(torch.uint8)
