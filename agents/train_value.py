"""Pre-train an encoder with annotation bootstrapping (AB) on the image view MDP.

    python agents/train_value.py                        # cpu-small preset, embedded "scenes"
    python agents/train_value.py --ab-weight 0          # the base method alone (the baseline)
    python agents/train_value.py gpu-vits16 --lr 1e-4   # a preset (the first word), then flags
    python agents/train_value.py --resume runs/<name>   # continue a run exactly

Read top to bottom: :func:`train_step` (loss, backward, clip, optimizer step, EMA), then
:func:`_run` (build everything; the loop: learning rate, sample, step, log, checkpoint; a
signal saves), then ``finish_run`` (the export ``runs/<name>/encoder/``, the final report and
its verdict). Run folders, resume rules, what survives which fault: docs/architecture.md."""

from __future__ import annotations

import math
import os
import sys
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # `python agents/train_value.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Idle OpenMP threads sleep instead of spinning: with 2 threads on 2 cores, one busy core
# (any other process) otherwise slows each step about 10x. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from agents.infra.arg_checks import check_train_args
from agents.infra.checkpoint import CHECKPOINT, non_finite, restore_checkpoint, save_checkpoint
from agents.infra.config import (  # noqa: F401 - Args, PRESETS, parse_args: re-exported
    PRESETS,
    RESUME_MAY_CHANGE,
    RESUME_PER_RUN,
    Args,
    cli_given,
    default_name,
    given_fields,
    parse_args,
)
from agents.infra.distributed import Ranks, launched
from agents.infra.flat_args import flat_fields
from agents.infra.progress import Progress, describe_batch
from agents.infra.runs import StopSignals, open_run
from agents.infra.sources import build_datasets, sync_streams
from agents.infra.train_utils import (
    build_agent,
    finish_run,
    make_optimizer,
    schedules,
    start_value_phase,
)


def train_step(model, agent, optimizer, scaler, batch, amp: torch.dtype | None,
               grad_clip: float, ema_rate: float, ranks: Ranks, step: int,
               gauges: bool = True, check: bool = True,
               unchecked: list[torch.Tensor] | None = None, enc=None) -> dict[str, float]:
    """One optimizer step on ``batch`` (this rank's; ``enc``: its cached encodings in the value
    phase's ``--value-cache``, else None): the loss (``model``: the agent's loss, DDP-wrapped
    with several ranks, which averages the gradients in ``backward``), the clipped update, the
    EMA step of the target. Returns the loss's metrics (with the value function's gauges when
    ``gauges``: :meth:`agents.method.ab.ABAgent.loss`).

    check: the host checks this step (it waits for the device): raises ``FloatingPointError``
    on every rank if the loss of any rank, a loss since the last check, or a weight is
    non-finite; metrics are floats. ``check=False`` (a GPU between checks, ``--check-every``):
    nothing is waited for; the loss's finiteness is appended to ``unchecked`` (a device bool)
    for the next check, and the metrics stay 0-d device tensors."""
    with torch.autocast(batch.base_views.device.type, dtype=amp or torch.float32,
                        enabled=amp is not None):
        # base loss + ab_weight * bootstrapping loss; metrics as floats only when checked
        loss, metrics = model(batch, gauges, check, enc)
    if check:
        since = unchecked if unchecked is not None else []
        finite = math.isfinite(metrics["loss"]) and (not since or bool(torch.stack(since).all()))
        if ranks.any(not finite):
            where = f" on rank {ranks.rank}" if ranks.distributed else ""
            when = (f"at a step in {step + 1 - len(since)}-{step + 1}" if since
                    else f"at step {step + 1}")
            raise FloatingPointError(f"non-finite loss ({metrics['loss']}{where}) {when}")
        since.clear()
    else:
        unchecked.append(torch.isfinite(loss.detach()))
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:  # fp16: scaled backward, unscaled before the clip
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(agent.online.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    agent.update_target(ema_rate)  # the EMA target: target <- target + rate (online - target)
    if check:
        bad = non_finite(agent.online.named_parameters())
        if bad:  # the loss was finite but the update was not (the same on every rank)
            raise FloatingPointError(f"non-finite weights {bad[:3]} after step {step + 1}")
    return metrics


def train(args: Args, given: set[str] | None = None) -> dict:
    """Run (or resume) one training job; returns the final summary (also in summary.json).

    given: the fields set on the command line (None: those that differ from the preset); on
    ``--resume`` they are applied (RESUME_MAY_CHANGE) or refused (any other that differs).
    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this; rank 0 alone opens the run
    folder and sends the run's arguments and checkpoint to the others (infra/distributed.py)."""
    check_train_args(args)
    ranks = launched()
    with StopSignals(ranks.distributed, ranks.main) as stop, ExitStack() as held:
        created = ranks.start()  # several ranks: the process group (no device chosen yet)
        try:  # every rank's flags are rank 0's, or all refuse (else rank 0's rule unnoticed)
            ranks.check_same_args(flat_fields(args))
        except SystemExit:  # leave the group first: its threads abort an exiting process
            ranks.leave(created)
            raise
        args, run_dir, resumed = ranks.on_main(
            open_run, args, given_fields(args) if given is None else given, held,
            default_name(args), RESUME_MAY_CHANGE, RESUME_PER_RUN, ranks.world_size)
        check_train_args(args)
        threads = torch.get_num_threads()
        try:
            return _run(args, run_dir, resumed, stop, ranks)
        finally:  # the caller's thread pool as it was: a larger one left behind makes a later
            torch.set_num_threads(threads)  # fork (e.g. AsyncVectorEnv) hang in libgomp
            ranks.leave(created)


def _run(args: Args, run_dir: Path, resumed: dict | None, stop: StopSignals,
         ranks: Ranks) -> dict:
    torch.set_num_threads(args.threads)
    device = ranks.device(args.device)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
           "auto": torch.bfloat16}[args.precision] if device.type == "cuda" else None
    ckpt_path = run_dir / CHECKPOINT

    # data, agent, optimiser, schedules
    torch.manual_seed(args.seed)
    data = build_datasets(args)
    agent, sampler = build_agent(args, data, ranks.rank,
                                 device if args.render_on == "device" else "cpu")
    agent.to(device)
    optimizer, scaler = make_optimizer(args, agent, amp)
    lr_schedule, ema_schedule = schedules(args)  # per step: pre-training's, the value phase's
    step = 0
    if resumed is not None:
        step = restore_checkpoint(resumed, agent, optimizer, scaler, sampler, args.weight_decay,
                                  ranks.rank)
        if ranks.main:
            print(f"resumed {run_dir} at step {step}/{args.all_steps}")

    def wrapped():  # DDP with several ranks (again for the value phase: another graph)
        model = ranks.wrap(agent, device)  # compiled: the loss and its backward as graphs
        return torch.compile(model) if args.compile else model

    model = wrapped() if step < args.total_steps else None
    last = args.all_steps if not args.stop_at else min(args.stop_at, args.all_steps)
    progress = Progress(args, run_dir, step, sampler.views_per_step(args.ab.ab_weight > 0), ranks,
                        last, (args.value_boot_images or sampler.boot_images) * sampler.n_views)
    if ranks.main:
        print(describe_batch(args, sampler, ranks.world_size), flush=True)
    saved_step = step if resumed is not None else None

    def checkpoint() -> None:  # every rank: rank 0 writes every rank's streams, the others wait
        nonlocal saved_step
        streams = ranks.gather({"sampler": sampler.state_dict(),
                                "torch_rng": torch.get_rng_state()})
        ranks.check_same(agent.state_dict())
        if ranks.main:
            progress.durable()
            with stop.blocked():  # a second Ctrl-C waits until the file is complete
                save_checkpoint(ckpt_path, args, agent, optimizer, scaler, sampler, step,
                                streams if ranks.distributed else None)
        ranks.barrier()
        saved_step = step

    def kept() -> str:
        return (f"the last checkpoint is kept: {ckpt_path} (step {saved_step})"
                if saved_step is not None else "no checkpoint was written yet")

    # The loop. Ctrl-C / SIGTERM: finish the step, save, stop (exact resumption); a second: at
    # once. `between`: half-updated state (streams advanced, `step` not), never saved abruptly.
    between, stop.defer = False, True
    # finiteness checks wait for the device: on a GPU every --check-every, log, checkpoint step
    check_every = args.check_every or (1 if device.type == "cpu" else args.log_every)
    unchecked, pool = [], None  # pool: the value phase's batches if cached (--value-cache)
    try:
        with progress:
            while step < last and not stop.received:
                pretraining = step < args.total_steps
                if not pretraining and not agent.value_only:  # the value phase: Q_AB alone
                    model = None  # (the pre-training graph's DDP wrapper goes)
                    pool = start_value_phase(args, agent, optimizer, sampler, data, device, step)
                    model = wrapped()
                lr, ema = float(lr_schedule[step]), float(ema_schedule[step])
                for group in optimizer.param_groups:  # the learning rate of this step
                    group["lr"] = lr * (group.get("lr_scale", 1.0) if pretraining else 1.0)
                between = True
                if pool is not None:  # the value phase's cached batches: nothing drawn
                    batch, enc = pool(step - args.total_steps)
                else:  # streaming shards: this step's buffer, then the batch
                    sync_streams(data, step, sampler, agent)
                    batch, enc = sampler.sample(device, bootstrap=args.ab.ab_weight > 0), None
                logged = (step + 1) % args.log_every == 0 or step + 1 == last
                checked = logged or (step + 1) % check_every == 0 or (
                    step + 1) % args.checkpoint_every == 0  # the host waits for the device
                metrics = train_step(model, agent, optimizer, scaler, batch, amp, args.grad_clip,
                                     ema, ranks, step, gauges=logged, check=checked,
                                     unchecked=unchecked, enc=enc)
                step += 1
                between = False
                stop.sync(ranks.max)  # several ranks: all stop after the same step
                progress.update(step, metrics, lr, ema)
                if step % args.checkpoint_every == 0 or step == last or stop.received:
                    checkpoint()
            if stop.received and saved_step != step:  # a signal between the check and here
                checkpoint()
    except KeyboardInterrupt:  # a second signal, or raised by code: stop at once
        if (not stop.received and not between and step != saved_step
                and not ranks.distributed):  # a clean step boundary: it can still be saved
            with progress:
                checkpoint()
        progress.close()
        why = (f"stopped at once ({' then '.join(stop.received)})" if stop.received
               else "interrupted")
        print(f"\n{why}: {kept()}"
              + (f"; continue with --resume {run_dir}" if saved_step is not None else ""))
        return {"step": saved_step, "interrupted": True, "signal": stop.exit_code()}
    except FloatingPointError as e:
        progress.close()
        raise SystemExit(
            f"{e}: stopping; {kept()}. Try a lower --lr (e.g. --lr {args.lr / 10:g}) or "
            f"--precision fp32: --resume {run_dir} --lr {args.lr / 10:g} applies it"
            if ranks.main else 1) from None
    finally:
        stop.defer = False
    progress.close()
    agent.fit_value_only(False)
    ranks.barrier()  # every rank is done; rank 0 reports alone
    return finish_run(args, agent, data, run_dir, step, stop, ranks, progress.writer)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        out = train(parse_args(argv, description=__doc__), given=cli_given(argv))
    except KeyboardInterrupt as e:  # before the loop started: nothing new to save
        print("interrupted before training started: nothing new was saved", file=sys.stderr)
        return getattr(e, "exit_code", 130)  # SIGTERM: 143, as if the loop had been running
    return (out.get("signal") or 130) if out.get("interrupted") else 0


if __name__ == "__main__":
    raise SystemExit(main())
