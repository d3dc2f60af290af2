"""Run folders of ``agents/train_value.py``: naming, locking, the log's repair on resume,
atomic text files, stop signals, and which flags may change on ``--resume``.

Guarantees (docs/architecture.md, "What survives which fault"):

- a fresh run never writes into an existing run: an explicit ``--name`` that names a run
  folder with files in it is refused (the message gives ``--resume`` and ``--name``); the
  default name gets the first free suffix ``-2``, ``-3``, ... (folders are claimed with an
  atomic ``mkdir``);
- one process per run folder: :class:`RunLock` holds an ``flock`` on ``<run>/lock`` (which also
  records the PID and host for the message). The kernel drops the lock when its process dies,
  however it dies, so a crash never leaves it stale;
- :func:`repair_log` drops log lines past the checkpoint and any torn line (a crash or a full
  disk mid-write) with a warning, and rewrites the log atomically.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import threading
import warnings
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path

from agents.infra.checkpoint import (
    CheckpointError,
    atomic_write,
    read_checkpoint,
    remove_temporaries,
    resolve,
)
from agents.infra.distributed import check_world_size
from agents.infra.flat_args import args_from, flat_fields, merge_resume_args

__all__ = [
    "RUN_FILES",
    "RunLock",
    "StopSignals",
    "Stopped",
    "claim_run_dir",
    "open_run",
    "repair_log",
    "write_text_atomic",
]

RUN_FILES = ("config.json", "log.jsonl", "checkpoint.pt", "summary.json")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a small text file atomically (:func:`agents.infra.checkpoint.atomic_write`)."""
    atomic_write(path, text.encode())


def _has_run(folder: Path) -> list[str]:
    return [f for f in RUN_FILES if (folder / f).exists()]


def claim_run_dir(runs_dir: Path, name: str, explicit: bool) -> Path:
    """The folder of a fresh run. ``explicit`` (``--name`` given): refuse a folder that holds
    a run; else the first of ``name``, ``name-2``, ``name-3``, ... that does not exist yet."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    if explicit:
        folder = runs_dir / name
        folder.mkdir(exist_ok=True)
        found = _has_run(folder)
        if found:
            raise SystemExit(
                f"run folder {folder} already holds a run ({', '.join(found)}); a fresh run "
                f"never overwrites one. Continue it with --resume {folder}, or start another "
                "with a different --name")
        return folder
    for k in range(1, 10_000):
        folder = runs_dir / (name if k == 1 else f"{name}-{k}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        if k > 1:
            print(f"{runs_dir / name} already exists: this run is {folder.name} "
                  f"(continue the other with --resume {runs_dir / name})")
        return folder
    raise SystemExit(f"no free run name {name}-N in {runs_dir}: pass --name")


class RunLock:
    """An exclusive lock on a run folder for the life of this process (``flock`` on
    ``<folder>/lock``; the file holds ``pid host`` of the holder for the refusal message)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise SystemExit(
                    f"run folder {self.path.parent} is in use by another training process "
                    f"(pid host: {holder}; lock file {self.path}). Wait for it to finish or "
                    "stop it; a crashed process releases the lock by itself") from None
            try:  # the file may have been unlinked by a releasing holder meanwhile: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still locked: nobody holds the old inode
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def repair_log(path: Path, step: int) -> None:
    """Keep the log lines of steps ``<= step`` (the checkpoint's); drop torn or foreign lines
    with a warning. The log is rewritten atomically."""
    if not path.exists():
        return
    keep, torn, past = [], [], 0
    for i, line in enumerate(path.read_bytes().decode(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            s = rec["step"]
        except (ValueError, KeyError, TypeError):
            torn.append(i)
            continue
        if s <= step:
            keep.append(line)
        else:
            past += 1
    if torn:
        warnings.warn(f"{path}: dropped {len(torn)} unreadable line(s) (line {torn[:5]}; a "
                      "crash or a full disk mid-write)", stacklevel=2)
    if torn or past:
        write_text_atomic(path, "".join(ln + "\n" for ln in keep))


class Stopped(KeyboardInterrupt):
    """A stop signal that stops the job at once (:class:`StopSignals`): ``exit_code`` is
    128 + its number (SIGINT 130, SIGTERM 143), the code ``train_value.py`` exits with."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + int(signum)


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (schedulers, ``timeout``) handling of the training job.

    While ``defer`` is True (the training loop), the first signal is recorded in
    ``received`` (the loop saves after the current step and stops); a second one raises
    :class:`Stopped` (a ``KeyboardInterrupt``) at once. While ``defer`` is False, a signal
    raises :class:`Stopped` at once. :meth:`blocked` holds both signals back (a checkpoint write
    is never cut). Outside the main thread nothing is installed (Python delivers signals to
    the main thread only).

    shared (several ranks under torchrun): while ``defer``, the first signal is only noted as
    ``pending``, and :meth:`sync`, called by every rank at the same point of each step, makes
    the first signal any rank got every rank's ``received``: all ranks stop after the same step
    and save together (rank 0 writes). Later signals are ignored while ``defer``: torchrun
    forwards a terminal's Ctrl-C to its workers, which the terminal already signalled, so one
    press arrives twice; stopping at once is the launcher's part (it kills the workers 30 s
    after forwarding a signal). announce: print the notice (rank 0 only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, shared: bool = False, announce: bool = True) -> None:
        self.defer = False
        self.received: list[str] = []
        self.shared, self.announce, self.pending = shared, announce, 0
        self._previous: dict = {}
        self._main = threading.current_thread() is threading.main_thread()

    def _notice(self, signum: int) -> None:
        if self.announce:
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            again = ("every rank stops after this step" if self.shared
                     else "send it again to stop at once")
            print(f"\n{what}: saving a checkpoint after this step ({again})", flush=True)

    def sync(self, agree) -> None:
        """Shared mode: ``agree(signal number or 0) -> the largest over the ranks`` (a
        collective every rank calls at the same point); a signal any rank got becomes
        ``received`` on all. Does nothing in a one-process run."""
        if not self.shared:
            return
        signum = agree(self.pending)
        if signum and not self.received:
            self.received.append(signal.Signals(signum).name)
            self._notice(signum)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.shared and self.defer:
            self.pending = self.pending or signum
            return
        if self.defer and not self.received:
            self.received.append(name)
            self._notice(signum)
            return
        self.received.append(name)
        raise Stopped(signum)

    def blocked(self):
        sigs = set(self.SIGNALS) if self._main else set()

        class _Blocked:
            def __enter__(_):
                if sigs:
                    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)

            def __exit__(_, *exc):
                if sigs:  # pending signals are delivered here
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)

        return _Blocked()

    def exit_code(self) -> int:
        """128 + the first signal's number (the shell's convention), 0 if none."""
        return 128 + int(signal.Signals[self.received[0]]) if self.received else 0

    def __enter__(self) -> StopSignals:
        if self._main:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()


def open_run(args, given: set[str], held: ExitStack, default_name: str, may_change: set[str],
             per_run: set[str], world_size: int = 1):
    """Claim (fresh) or re-open (``args.resume``) the run folder and lock it for the life of
    ``held``. Returns ``(args, run_dir, state)``: the run's arguments (resume: the saved ones
    with the allowed changes applied), its folder, and the checkpoint's state (``None`` for a
    fresh run, or a resumed run that had not written a checkpoint yet). A checkpoint of
    another world size than ``world_size`` (the number of processes) is refused."""
    state = None
    if not args.resume:
        explicit = bool(args.name)
        run_dir = claim_run_dir(Path(args.runs_dir), args.name or default_name, explicit)
        held.enter_context(RunLock(run_dir))
        found = _has_run(run_dir)
        if found:  # another process filled it between our mkdir and our lock
            raise SystemExit(f"run folder {run_dir} already holds a run ({', '.join(found)}): "
                             f"continue it with --resume {run_dir}, or pass another --name")
        remove_temporaries(run_dir)
        args = replace(args, name=run_dir.name)
    else:
        target = Path(args.resume)
        if not target.exists():
            raise SystemExit(f"--resume {args.resume!r}: no such run folder or checkpoint")
        run_dir = target if target.is_dir() else target.parent
        held.enter_context(RunLock(run_dir))
        for p in remove_temporaries(run_dir):
            print(f"removed a leftover temporary file {p} (a writer was killed)")
        ckpt = resolve(target)
        if ckpt.exists() or not target.is_dir():
            try:
                state = read_checkpoint(ckpt)
            except CheckpointError as e:
                raise SystemExit(f"--resume: {e}") from None
            if not isinstance(state.get("args"), dict) or "step" not in state:
                raise SystemExit(f"--resume: {ckpt} is a model checkpoint without a training "
                                 "state (no args / step): it cannot be resumed")
            check_world_size(state, world_size, str(run_dir))
            saved = args_from(type(args), state["args"], ckpt)
        elif (run_dir / "config.json").exists():
            print(f"{run_dir} has no checkpoint yet: restarting it from step 0 with its "
                  "config.json")
            try:
                saved = args_from(type(args), json.loads((run_dir / "config.json").read_text()),
                                   run_dir / "config.json")
            except ValueError as e:
                raise SystemExit(f"--resume: {run_dir / 'config.json'} is unreadable ({e}); "
                                 "start a fresh run with --name") from None
        else:
            raise SystemExit(f"--resume {args.resume!r}: no {ckpt.name} or config.json in "
                             f"{run_dir}")
        current = flat_fields(args)
        values = {k: current[k] for k in given | per_run}
        if "name" in values and values["name"] in ("", run_dir.name):
            values.pop("name")  # naming the run being resumed changes nothing
        new = merge_resume_args(saved, values, may_change, per_run)
        step = int(state["step"]) if state is not None else 0
        if new.all_steps < step:
            raise SystemExit(f"--total-steps {new.total_steps} with --value-steps "
                             f"{new.value_steps} ends below the checkpoint's step {step}: the "
                             "run is already past it")
        if saved.total_steps < step and new.total_steps != saved.total_steps:
            raise SystemExit(f"--total-steps {new.total_steps}: the run is in its value phase "
                             f"(step {step}, pre-training ended at {saved.total_steps}); its "
                             "pre-training cannot change now")
        changed = [k for k in ("threads", "device") if getattr(new, k) != getattr(saved, k)]
        if changed:
            print("resume: " + ", ".join(f"--{k} {getattr(new, k)!r} (the run had "
                                         f"{getattr(saved, k)!r})" for k in changed)
                  + ": the resumed run is not guaranteed to be bit-exact with an uninterrupted "
                  "one (float sums depend on the thread count and the device)")
        args = new
    write_text_atomic(run_dir / "config.json", json.dumps(asdict(args), indent=2))
    return args, run_dir, state
