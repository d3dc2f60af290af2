"""Views per second of ``ImageViewVectorEnv.step`` beside two references, one thread.

Columns, measured in the same run on the same 256x256 images, 64x64 views:

- ``ImageView-v0``: ``ImageViewVectorEnv.step`` with random actions (autoreset included).
- ``PIL SyncVectorEnv`` (a): Gymnasium's ``SyncVectorEnv`` over :class:`PILCropEnv`, a
  straightforward per-image env (same action mapping; PIL crop + bilinear resize per step).
- ``bare kernel`` (b): :func:`imgmdp_env.views.render_views` on the same number of views,
  at the boxes a random-policy run of the env visits, with no env around it.

With ``--device cuda`` (or another torch device) the table is the device env instead
(``gym.make_vec(..., device=...)``, the torch API: state, bank and rendering on the device,
torch actions drawn there up front) beside the bare kernel on the device (the portable torch
path of ``render_views`` with the bank moved there), at each ``--envs`` (e.g. 4096); the rates
count complete steps (the device is synchronised after each).

Goals (issue 2, at 256 envs): ImageView-v0 >= 5x (a), 10x as the stretch, and within 1.3x of (b)
(env/kernel ratio <= 1.3). Each cell is warmed up (numba compiles on first use), then timed in
short rounds for ``--seconds``; the median round rate is reported.

    .venv/bin/python -m benchmarks.env_throughput [--seconds 2] [--envs 1 16 256]
        [--no-antialias] [--clock wall|cpu] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium import spaces  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks._machine import cpu_model  # noqa: E402
from imgmdp_env.actions import action_to_relative  # noqa: E402
from imgmdp_env.datasets import ImageDataset, make_dataset  # noqa: E402
from imgmdp_env.env import ImageViewVectorEnv  # noqa: E402
from imgmdp_env.views import apply_relative, clamp_boxes, render_views, sample_boxes  # noqa: E402

VIEW = 64
IMAGE = 256
MAX_STEPS = 50  # the registered ImageView-v0 horizon, used by both envs


class PILCropEnv(gym.Env):
    """The straightforward baseline: one image per env as PIL, one crop + resize per step.

    Same dynamics as ImageView-v0 (action -> relative box -> clamped absolute box), with the box
    algebra applied to a single ``(4,)`` box; the view is ``img.crop(box).resize((64, 64),
    BILINEAR)`` (``crop`` pads outside the image with black, like the env's default fill).
    """

    metadata = {"render_modes": []}

    def __init__(self, images: list[Image.Image], max_pan: float = 0.5, max_zoom: float = 2.0,
                 min_size: float = 0.05, margin: float = 0.25) -> None:
        self.images = images
        self.max_pan, self.max_zoom = max_pan, max_zoom
        self.min_size, self.margin = min_size, margin
        self.observation_space = spaces.Box(0, 255, (3, VIEW, VIEW), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

    def _view(self) -> np.ndarray:
        img = self.images[self.index]
        cx, cy, w, h = self.box.tolist()
        px = (round((cx - w / 2) * img.width), round((cy - h / 2) * img.height),
              round((cx + w / 2) * img.width), round((cy + h / 2) * img.height))
        view = img.crop(px).resize((VIEW, VIEW), Image.BILINEAR)
        return np.asarray(view).transpose(2, 0, 1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.index = int(self.np_random.integers(len(self.images)))
        gen = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        self.box = sample_boxes(1, (0.1, 1.0), generator=gen)[0]
        self.t = 0
        return self._view(), {}

    def step(self, action):
        a = torch.from_numpy(np.clip(np.asarray(action, np.float32), -1.0, 1.0))
        rel = action_to_relative(a, self.max_pan, self.max_zoom)
        self.box = clamp_boxes(apply_relative(self.box, rel), self.min_size, self.margin)
        self.t += 1
        return self._view(), 0.0, False, self.t >= MAX_STEPS, {}


CLOCK = time.perf_counter  # --clock cpu: time.thread_time, blind to other processes' load


def rate(fn: Callable[[], None], views_per_call: int, seconds: float) -> float:
    """Median views/s over short timed rounds of ``fn`` filling ``seconds`` (after a warm-up)."""
    fn()  # warm-up: numba compile / caches / first autoreset
    t0, calls = CLOCK(), 0
    while calls < 3 or CLOCK() - t0 < 0.05:
        fn()
        calls += 1
    per_round = max(1, round(calls * 0.25 / (CLOCK() - t0)))  # ~0.25 s rounds
    rates, start = [], CLOCK()
    while len(rates) < 3 or CLOCK() - start < seconds:
        t = CLOCK()
        for _ in range(per_round):
            fn()
        rates.append(per_round * views_per_call / (CLOCK() - t))
    return statistics.median(rates)


def bench(n: int, ds: ImageDataset, pil: list[Image.Image], seconds: float, antialias: bool):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (16, n, 4)).astype(np.float32)  # cycled, drawn up front
    k = iter(range(10**12))

    env = ImageViewVectorEnv(n, dataset=ds, view_size=VIEW, antialias=antialias,
                             max_episode_steps=MAX_STEPS)
    env.reset(seed=0)
    env_rate = rate(lambda: env.step(actions[next(k) % 16]), n, seconds)

    sync = gym.vector.SyncVectorEnv([lambda: PILCropEnv(pil) for _ in range(n)])
    sync.reset(seed=0)
    pil_rate = rate(lambda: sync.step(actions[next(k) % 16]), n, seconds)

    # (b) renders the very boxes the env visits (recorded over more than one episode of a
    # random policy), so that env/kernel measures the env's overhead, not different boxes.
    bank = ds.bank(levels=4 if antialias else 1)
    rec = ImageViewVectorEnv(n, dataset=ds, view_size=VIEW, antialias=antialias,
                             max_episode_steps=MAX_STEPS)
    rec.reset(seed=1)
    visited = [rec.step(actions[i % 16])[-1] for i in range(MAX_STEPS + 14)]
    idx = [torch.from_numpy(info["image_index"]) for info in visited]
    boxes = [torch.from_numpy(info["box"]) for info in visited]
    kernel_rate = rate(lambda: render_views(bank, idx[(i := next(k) % len(idx))], boxes[i], VIEW,
                                            antialias=antialias), n, seconds)
    return env_rate, pil_rate, kernel_rate


def bench_device(n: int, ds: ImageDataset, seconds: float, antialias: bool, device: str
                 ) -> tuple[float, float]:
    """Views/s of the device env (torch API) and of the bare kernel on the device."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    actions = (torch.rand(16, n, 4, generator=gen) * 2 - 1).to(dev)  # cycled, drawn up front
    k = iter(range(10**12))

    env = ImageViewVectorEnv(n, dataset=ds, view_size=VIEW, antialias=antialias,
                             max_episode_steps=MAX_STEPS, device=dev)
    env.reset(seed=0)

    def env_step() -> None:
        env.step(actions[next(k) % 16])
        sync()

    env_rate = rate(env_step, n, seconds)
    # the bare kernel on the boxes a random-policy run of the device env visits (as in bench)
    visited = [env.step(actions[i % 16])[-1] for i in range(MAX_STEPS + 14)]
    bank = env.bank  # already on the device

    def kernel() -> None:
        info = visited[next(k) % len(visited)]
        render_views(bank, info["image_index"], info["box"], VIEW, antialias=antialias)
        sync()

    return env_rate, rate(kernel, n, seconds)


def machine() -> str:
    cpu = cpu_model()
    try:
        import numba

        nb = f"numba {numba.__version__} ({numba.get_num_threads()} thread)"
    except ImportError:
        nb = "no numba (torch path)"
    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__} "
            f"({torch.get_num_threads()} thread), numpy {np.__version__}, {nb}, "
            f"gymnasium {gym.__version__}, Pillow {Image.__version__}, "
            f"Python {platform.python_version()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 16, 256])
    p.add_argument("--images", type=int, default=64, help="number of 256x256 images")
    p.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=True,
                   help="ImageView-v0 and the kernel sample the image pyramid (PIL's resize is "
                        "always a filtered, i.e. anti-aliased, bilinear)")
    p.add_argument("--device", default="cpu",
                   help="cpu: the numpy env against PIL and the CPU kernel (the table above); a "
                        "torch device such as cuda: the device env (torch API) and the kernel "
                        "there")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this thread's CPU time (steadier on a shared, "
                        "loaded machine; it does not count time spent waiting for a core)")
    args = p.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.thread_time
    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except ImportError:
        pass

    ds = make_dataset("scenes", size=IMAGE, n=args.images)
    pil = [Image.fromarray(img) for img in ds.images]
    print(f"machine: {machine()}")
    print(f"{args.images} scenes of {IMAGE}x{IMAGE}, {VIEW}x{VIEW} views, "
          f"antialias={args.antialias}, {args.clock} clock, {args.seconds:g} s per cell (median of "
          f"~0.25 s rounds); load average before: {os.getloadavg()[0]:.2f}\n")
    if args.device != "cpu":
        name = (torch.cuda.get_device_name(torch.device(args.device))
                if torch.device(args.device).type == "cuda" else args.device)
        print(f"device: {args.device} ({name})\n")
        print(f"| envs | ImageView-v0 on {args.device} views/s | bare kernel on {args.device} "
              "views/s | env/kernel |")
        print("|---:|---:|---:|---:|")
        for n in args.envs:
            env_rate, kernel_rate = bench_device(n, ds, args.seconds, args.antialias, args.device)
            print(f"| {n} | {env_rate:,.0f} | {kernel_rate:,.0f} | {kernel_rate / env_rate:.2f} |",
                  flush=True)
        return
    print("| envs | ImageView-v0 views/s | PIL SyncVectorEnv views/s | bare kernel views/s "
          "| speed-up vs PIL | env/kernel |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.envs:
        env_rate, pil_rate, kernel_rate = bench(n, ds, pil, args.seconds, args.antialias)
        print(f"| {n} | {env_rate:,.0f} | {pil_rate:,.0f} | {kernel_rate:,.0f} "
              f"| {env_rate / pil_rate:.1f}x | {kernel_rate / env_rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
