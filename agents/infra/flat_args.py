"""The flat view of nested configuration dataclasses (``Args`` holds ``ABConfig`` as ``args.ab``):
tyro's ``OmitArgPrefixes`` gives every nested field its own flag name, so the command line, the
``--resume`` rules and old flat run configs all speak of ``gamma``, not ``ab.gamma``. Here:
flatten and rebuild by flag name, which flags a command line names, the merge of a resumed
run's saved arguments with the given ones, and the reading of saved configs (old flat ones
included)."""

from __future__ import annotations

import typing
import warnings
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

from agents.method.ab_config import LEGACY_AB_CONFIG, ABConfig

__all__ = ["RENAMED_ARGS", "args_from", "flags_given", "flat_fields", "from_flat",
           "merge_resume_args", "nest_flat"]


# Fields renamed since runs were saved: {old name: new name}. A saved config (config.json, a
# checkpoint's "args") with the old name loads under the new one (args_from, so --resume too).
RENAMED_ARGS = {"image_size": "scene_size"}  # the side of generated scene images


def _renamed(saved: dict) -> dict:
    """``saved`` with the old names of :data:`RENAMED_ARGS` replaced by the new ones (at the
    top level, where a flat or nested config keeps them; a new name given wins)."""
    out = dict(saved)
    for old, new in RENAMED_ARGS.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def _nested(cls) -> dict[str, type]:
    """The fields of dataclass ``cls`` that hold a dataclass: ``{name: its class}``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}


def _leaves(cls) -> list:
    """The ``dataclasses.Field`` of every flag of ``cls``: nested dataclasses hoisted (tyro's
    ``OmitArgPrefixes``: a nested field's flag is its own name), in declaration order."""
    nested = _nested(cls)
    out = []
    for f in fields(cls):
        out += _leaves(nested[f.name]) if f.name in nested else [f]
    return out


def flat_fields(obj) -> dict:
    """``{flag field: value}`` of a dataclass instance, nested dataclasses hoisted: the names
    are the command line's (``gamma`` for ``args.ab.gamma``; tyro refuses duplicates)."""
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        out.update(flat_fields(v) if is_dataclass(v) else {f.name: v})
    return out


def from_flat(cls, values: dict, base=None):
    """The inverse of :func:`flat_fields`: ``base`` (default ``cls()``) with the flat
    ``values`` set, each in its nested dataclass."""
    base = cls() if base is None else base
    nested = _nested(cls)
    top = {k: v for k, v in values.items() if k not in nested}
    for name, sub in nested.items():
        names = {f.name for f in _leaves(sub)}
        top[name] = from_flat(sub, {k: top.pop(k) for k in list(top) if k in names},
                              getattr(base, name))
    return replace(base, **top)


def merge_resume_args(saved, given: dict, may_change: set[str], per_run: set[str]):
    """The arguments of a resumed run: the saved ones, with the flags the user gave.

    given: ``{field: value}`` of the flags given on this command line (flat names: a nested
    field by its own name, :func:`flat_fields`); per_run: fields that belong to one invocation
    (taken as given, never saved); may_change: fields applied when they differ (each change is
    printed). Any other given field that differs from the run's is refused, naming the flag
    and both values."""
    values = flat_fields(saved)
    changes, refused = {}, []
    for k, v in given.items():
        if k not in values:
            continue
        same = (tuple(v) == tuple(values[k])) if isinstance(v, list | tuple) else v == values[k]
        if k in per_run or same:
            changes[k] = v
        elif k in may_change:
            print(f"resume: --{k.replace('_', '-')} {values[k]!r} -> {v!r}")
            changes[k] = v
        else:
            name = "the preset" if k == "preset" else f"--{k.replace('_', '-')}"
            refused.append(f"{name} {v!r} (the run has {values[k]!r})")
    if refused:
        raise SystemExit(
            "--resume cannot change " + "; ".join(refused) + ". Only "
            + ", ".join(f"--{k.replace('_', '-')}" for k in sorted(may_change))
            + " may change on resume: drop the others, or start a new run with --name")
    return from_flat(type(saved), changes, saved)


def flags_given(argv: list[str], cls) -> set[str]:
    """The fields of dataclass ``cls`` (nested ones by their own name, :func:`flat_fields`)
    named by ``--flag`` / ``--flag=v`` / ``--no-flag`` in a tyro command line."""
    leaves = _leaves(cls)
    names = {f.name for f in leaves}
    bools = {f.name for f in leaves if f.type in (bool, "bool")}
    given = set()
    for a in argv:
        if not a.startswith("--"):
            continue
        key = a[2:].split("=", 1)[0].replace("-", "_")
        if key.startswith("no_") and key[3:] in bools:
            key = key[3:]
        if key in names:
            given.add(key)
    return given


def nest_flat(cls, saved: dict) -> dict:
    """A saved config (``config.json``, a checkpoint's ``"args"``) in the nesting of ``cls``:
    the keys of a nested dataclass field saved at the top level (a run written before
    ``Args.ab`` existed: ``"gamma"`` beside ``"seed"``) move into that field's dict."""
    saved = dict(saved)
    for name, sub in _nested(cls).items():
        inner = dict(saved.get(name) or {})
        for f in fields(sub):
            if f.name in saved and f.name not in inner:
                inner[f.name] = saved.pop(f.name)
        saved[name] = nest_flat(sub, inner)
    return saved


def args_from(cls, saved: dict, where: Path):
    """``cls`` from a saved config (flat ones of older runs: :func:`nest_flat`; fields renamed
    since: :data:`RENAMED_ARGS`), tolerating fields added or removed since the run was saved."""
    unknown: list[str] = []

    def build(kind, values: dict, prefix: str):
        names = {f.name for f in fields(kind)}
        unknown.extend(prefix + k for k in sorted(set(values) - names))
        kept = {k: tuple(v) if isinstance(v, list) else v
                for k, v in values.items() if k in names and k not in _nested(kind)}
        if kind is ABConfig and values:  # a run saved before a field existed: as it ran
            kept = {**{k: v for k, v in LEGACY_AB_CONFIG.items() if k in names}, **kept}
        for name, sub in _nested(kind).items():
            kept[name] = build(sub, values.get(name) or {}, f"{prefix}{name}.")
        return replace(kind(), **kept)

    out = build(cls, nest_flat(cls, _renamed(saved)), "")
    if unknown:
        warnings.warn(f"{where}: ignoring saved argument(s) {unknown} that this code does not "
                      "have", stacklevel=3)
    return out
