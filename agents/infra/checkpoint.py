"""The one checkpoint format of ``agents/train_value.py``, its one writer and its one reader.

A checkpoint is one file: a text header line, then the ``torch.save`` bytes of a dict::

    IMGMDP-CHECKPOINT 1 <payload bytes> <sha256 of the payload>\\n<payload>

- written atomically: a temporary file in the same folder, ``fsync``, ``os.replace``, then an
  ``fsync`` of the folder; a crash leaves the old checkpoint or the new one, never a mix (a
  leftover ``checkpoint.pt.tmp*`` is removed by the next run that locks the folder);
- verified on every load (:func:`read_checkpoint`): the marker (a foreign file such as
  ``config.json``, an empty or random file), the length (a truncated file) and the digest
  (silent bit corruption) are checked before anything is unpickled, and the payload is loaded
  with ``weights_only=True`` (tensors and plain data only), then its fields are checked (a
  step >= 0 and within the run's ``total_steps`` + ``value_steps``, real RNG states, ...) and
  its weights must be finite;
- never non-finite: :func:`save_checkpoint` refuses a state with NaN / inf weights, so a
  checkpoint on disk is always one a run may continue from.

Used by the training job (``--resume``), :func:`agents.method.ab.load_agent` /
:func:`agents.method.ab.load_encoder`, ``agents/evaluate.py`` and the SB3 extractor.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path

import torch

from agents.infra.atomic import fsync_dir

__all__ = [
    "CHECKPOINT",
    "CheckpointError",
    "check_fields",
    "non_finite",
    "read_checkpoint",
    "remove_temporaries",
    "require",
    "resolve",
    "restore_checkpoint",
    "save_checkpoint",
    "write_checkpoint",
]

CHECKPOINT = "checkpoint.pt"  # its name inside a run folder
MAGIC = b"IMGMDP-CHECKPOINT"
VERSION = 1
_HEADER_MAX = 256  # the header line is shorter than this


class CheckpointError(ValueError):
    """A file is not a readable checkpoint (foreign, truncated, corrupted or incomplete)."""


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file, or ``checkpoint.pt`` inside a run folder."""
    p = Path(path)
    return p / CHECKPOINT if p.is_dir() else p


def non_finite(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
               ) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    named = [(k, v) for k, v in items if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not named:
        return []
    # one fused reduction (a norm is non-finite iff an element is) and one device sync
    norms = torch._foreach_norm([v.detach().float() for _, v in named])
    bad = ~torch.isfinite(torch.stack([n.cpu() for n in norms]))
    return [k for (k, _), b in zip(named, bad.tolist(), strict=True) if b]


def atomic_write(path: str | os.PathLike, *parts: bytes | memoryview) -> None:
    """Replace ``path`` with the concatenated ``parts``, atomically: a temporary file beside it,
    fsynced, ``os.replace``d, the folder fsynced (the rename itself durable). The temporary
    file is removed if anything fails (or is interrupted)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` (tensors and plain data) to ``path`` in the checkpoint format,
    atomically (:func:`atomic_write`)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    header = f"{MAGIC.decode()} {VERSION} {len(payload)} {hashlib.sha256(payload).hexdigest()}\n"
    atomic_write(path, header.encode(), payload)


def _describe(head: bytes) -> str:
    """What a file that lacks the marker seems to be."""
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return ("it is JSON text (config.json, summary.json or log.jsonl passed by mistake? "
                "pass the run folder or its checkpoint.pt)")
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return ("it is a plain torch.save file, not one written by agents/train_value.py "
                "(no checkpoint marker)")
    return f"it does not start with the checkpoint marker {MAGIC.decode()!r}"


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    finite: bool = True) -> dict:
    """The state dict of a checkpoint file (or of ``checkpoint.pt`` in a run folder), verified.

    Raises :class:`CheckpointError` (a ``ValueError``) naming the file and what it is not:
    missing, empty, foreign (no marker), of another format version, truncated, corrupted
    (digest mismatch) or unreadable; or, once loaded, what is wrong in it: a field that is not
    what :func:`save_checkpoint` writes (:func:`check_fields`: a negative step, a step past the
    run's ``total_steps``, a torch RNG state that is not one, ...) or, with ``finite`` (the
    default; False only to inspect a broken file), a NaN / inf weight or optimizer moment,
    naming the first."""
    p = resolve(path)
    where = f"{p} is not a usable checkpoint"
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {p}: pass a run folder (runs/<name>) or its "
                              f"{CHECKPOINT}")
    if not p.is_file():
        raise CheckpointError(f"{where}: it is not a regular file")
    with open(p, "rb") as f:
        head = f.read(_HEADER_MAX)
        if not head:
            raise CheckpointError(f"{where}: it is empty (0 bytes; a crash or a full disk "
                                  "while it was copied?)")
        if not head.startswith(MAGIC + b" "):
            raise CheckpointError(f"{where}: {_describe(head)}")
        end = head.find(b"\n")
        fields = head[:end].decode("ascii", "replace").split() if end > 0 else []
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit():
            raise CheckpointError(f"{where}: its header line is damaged ({head[:80]!r})")
        version, size, digest = int(fields[1]), int(fields[2]), fields[3]
        if version != VERSION:
            raise CheckpointError(f"{where}: it has format version {version}; this code reads "
                                  f"version {VERSION}")
        f.seek(end + 1)
        payload = f.read(size + 1)
    if len(payload) != size:
        raise CheckpointError(f"{where}: it is truncated or has trailing bytes ({len(payload)} "
                              f"payload bytes, the header says {size})")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != digest:
        raise CheckpointError(f"{where}: it is corrupted (sha256 of the payload is "
                              f"{actual[:16]}..., the header says {digest[:16]}...)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file's name
        raise CheckpointError(f"{where}: its payload does not load ({type(e).__name__}: "
                              f"{e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: its payload is a {type(state).__name__}, not a dict")
    check_fields(state, where)
    if finite:
        bad = non_finite(_weights(state))
        if bad:
            raise CheckpointError(
                f"{where}: it holds non-finite weights (NaN or inf), first in {bad[0]!r}"
                f"{f' ({len(bad)} tensors in all: {bad[:5]})' if len(bad) > 1 else ''}; no run "
                "writes them (save_checkpoint refuses): it was written by other code or edited")
    return state


def _weights(state: dict) -> list[tuple[str, torch.Tensor]]:
    """The model and optimizer tensors of a state, by name (``agent.<param>``,
    ``optimizer.<i>.<moment>``)."""
    out: list[tuple[str, torch.Tensor]] = []
    if isinstance(state.get("agent"), dict):
        out += [(f"agent.{k}", v) for k, v in state["agent"].items()]
    opt = state.get("optimizer")
    if isinstance(opt, dict) and isinstance(opt.get("state"), dict):
        out += [(f"optimizer.{i}.{k}", v) for i, s in opt["state"].items()
                if isinstance(s, dict) for k, v in s.items()]
    return out


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_fields(state: dict, where: str) -> None:
    """Refuse a checkpoint whose fields (those it has: :func:`require` asks for the ones a
    reader needs) are not what :func:`save_checkpoint` writes: a checksum only proves the file
    is the one written, not that its writer wrote sane values. ``where`` starts the message
    (the file's name)."""
    def refuse(field: str, shown: str, want: str) -> None:  # shown: the value, described
        raise CheckpointError(f"{where}: its {field!r} is {shown}; it must be {want}")

    args = state.get("args")
    if "args" in state and not isinstance(args, dict):
        refuse("args", _short(args), "a dict of the run's arguments")
    total = args.get("total_steps") if isinstance(args, dict) else None
    if _is_int(total) and _is_int(args.get("value_steps", 0)):  # then the value phase
        total += args.get("value_steps", 0)
    if "step" in state:
        step = state["step"]
        if not _is_int(step) or step < 0:
            refuse("step", _short(step), "an integer >= 0 (the optimizer steps taken)")
        if _is_int(total) and total >= 1 and step > total:
            refuse("step", _short(step), f"<= the run's total_steps + value_steps ({total})")
    for key in ("agent", "optimizer", "sampler", "encoder", "ab_config"):
        if key in state and not isinstance(state[key], dict):
            refuse(key, f"a {type(state[key]).__name__}", "a dict")
    for key in ("tokenizer", "scaler"):
        if state.get(key) is not None and not isinstance(state[key], dict):
            refuse(key, f"a {type(state[key]).__name__}", "a dict or None")
    agent = state.get("agent")
    if isinstance(agent, dict):
        odd = [k for k, v in agent.items() if not isinstance(v, torch.Tensor)]
        if odd:
            refuse("agent", f"a dict whose {odd[0]!r} is a {type(agent[odd[0]]).__name__}",
                   "a state dict of tensors")
    opt = state.get("optimizer")
    if isinstance(opt, dict) and not (isinstance(opt.get("state"), dict)
                                      and isinstance(opt.get("param_groups"), list)):
        refuse("optimizer", f"a dict of {list(opt)[:8]}",
               "an optimizer state dict (state, param_groups)")
    if "text_dim" in state and state["text_dim"] is not None and not (
            _is_int(state["text_dim"]) and state["text_dim"] >= 1):
        refuse("text_dim", _short(state["text_dim"]), "an integer >= 1 or None")
    if "torch_rng" in state:
        _rng_state("torch_rng", state["torch_rng"], refuse)
    if "world_size" in state or "ranks" in state:
        world, ranks = state.get("world_size"), state.get("ranks")
        if not _is_int(world) or world < 1:
            refuse("world_size", _short(world), "an integer >= 1 (the processes that trained it)")
        if not isinstance(ranks, list) or len(ranks) != world:
            size = f" of {len(ranks)}" if isinstance(ranks, list) else ""
            refuse("ranks", f"a {type(ranks).__name__}{size}",
                   f"a list of one state per rank ({world})")
        for r, own in enumerate(ranks):
            if not isinstance(own, dict) or not isinstance(own.get("sampler"), dict):
                refuse(f"ranks[{r}]", f"a dict of {list(own)[:8]}" if isinstance(own, dict)
                       else f"a {type(own).__name__}",
                       "a dict with the rank's sampler and torch_rng")
            _rng_state(f"ranks[{r}].torch_rng", own.get("torch_rng"), refuse)


def _rng_state(field: str, value, refuse) -> None:
    if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.ndim == 1
            and value.numel() > 0):
        shown = (f"a {value.dtype} tensor of shape {tuple(value.shape)}"
                 if isinstance(value, torch.Tensor) else f"a {type(value).__name__}")
        refuse(field, shown, "torch.get_rng_state()'s uint8 tensor")


def require(state: dict, keys: Iterable[str], path: str | os.PathLike, what: str) -> None:
    """Refuse a verified checkpoint that lacks the entries ``what`` needs."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{resolve(path)} is not a usable checkpoint for {what}: it has "
                              f"no {missing} (its keys: {sorted(state)})")


def save_checkpoint(path: str | os.PathLike, args, agent, optimizer, scaler, sampler,
                    step: int, ranks: list[dict] | None = None) -> None:
    """Everything needed to continue a run exactly, in one file written atomically.

    ranks: with more than one process (``agents.infra.distributed``), every rank's
    ``{"sampler": ..., "torch_rng": ...}`` in rank order (saved with the world size; the
    model and optimizer are the same on every rank); None for a one-process run.

    Raises ``FloatingPointError`` (and writes nothing) if a weight or an optimizer state is
    NaN or infinite: the checkpoint already on disk is never replaced by a broken one."""
    if not _is_int(step) or step < 0:
        raise ValueError(f"step ({_short(step)}) must be an integer >= 0: not saved")
    agent_state = agent.state_dict()
    bad = non_finite(agent_state) + non_finite(
        (f"optimizer.{i}.{k}", v) for i, s in optimizer.state_dict()["state"].items()
        for k, v in s.items())
    if bad:
        raise FloatingPointError(f"non-finite values in {bad[:5]}"
                                 f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''} at "
                                 f"step {step}: not saved")
    extra = {} if ranks is None else {"world_size": len(ranks), "ranks": ranks}
    write_checkpoint({
        "step": step,
        "args": asdict(args),
        "encoder": dict(agent.encoder.config),
        "ab_config": asdict(agent.cfg),
        "tokenizer": agent.tokenizer.state_dict() if agent.tokenizer is not None else None,
        "text_dim": agent.text_dim,
        "agent": agent_state,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "sampler": sampler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        **extra,
    }, path)


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove leftover ``checkpoint.pt.tmp*`` files of killed writers (call it only while
    holding the folder's lock: a live writer's temporary file must not vanish)."""
    gone = sorted(Path(folder).glob(f"{CHECKPOINT}.tmp*"))
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def restore_checkpoint(state: dict, agent, optimizer, scaler, sampler,
                       weight_decay: float | None = None, rank: int = 0) -> int:
    """Load a training state written by :func:`save_checkpoint` into freshly built objects
    (and the torch RNG); ``weight_decay`` replaces the saved one of the decayed group (a flag
    that may change on resume); rank: whose sampler stream and RNG to take from a multi-process
    checkpoint (its world size is checked by ``runs.open_run``). Returns the step."""
    require(state, ("step", "agent", "optimizer", "sampler", "torch_rng"), "the checkpoint",
            "resuming a run")
    agent.load_state_dict(state["agent"])
    optimizer.load_state_dict(state["optimizer"])
    if weight_decay is not None:  # the decayed groups (older checkpoints: the first)
        for group in optimizer.param_groups:
            if group.get("decay", group is optimizer.param_groups[0]):
                group["weight_decay"] = weight_decay
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    own = state["ranks"][rank] if "ranks" in state else state
    sampler.load_state_dict(own["sampler"])
    torch.set_rng_state(own["torch_rng"])
    return int(state["step"])
