"""Issue 22: the choices of the ``Literal``-typed flags are written once, in their types. The
command line's parser enforces them; a programmatic ``Args(...)`` / ``with_flags`` does not, so
:func:`agents.infra.arg_checks.literal_choices` refuses a value outside the type from the type
itself
(``check_train_args``, ``check_eval_args``), naming the flag, the bad value and the valid ones.
The fields are enumerated here from the types, so a new ``Literal`` field is covered as it is
declared."""

from __future__ import annotations

import ast
import copy
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Literal

import pytest

from agents.evaluate import Args as EvalArgs
from agents.infra import arg_checks
from agents.infra.arg_checks import check_eval_args, check_train_args, literal_choices
from agents.infra.config import Args
from agents.method.ab_config import ABConfig

BAD = "no-such-choice"


def _literal_leaves(cls, path=()) -> list[tuple[tuple[str, ...], tuple]]:
    """``(path of attribute names, valid values)`` of every ``Literal`` field of dataclass
    ``cls``, nested dataclasses included (``("ab", "candidates")``)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            out += _literal_leaves(hint, (*path, f.name))
        elif typing.get_origin(hint) is Literal:
            out.append(((*path, f.name), typing.get_args(hint)))
    return out


TRAIN_LITERALS = _literal_leaves(Args)
EVAL_LITERALS = _literal_leaves(EvalArgs)


def _with(obj, path: tuple[str, ...], value):
    """``obj`` with the field at ``path`` set to ``value`` by ``dataclasses.replace``; a
    dataclass with a ``__post_init__`` (``ABConfig`` itself refuses a bad ``base`` or
    ``text_backbone``, before the check could) is copied and set directly."""
    head, *rest = path
    if rest:
        return replace(obj, **{head: _with(getattr(obj, head), tuple(rest), value)})
    if not hasattr(obj, "__post_init__"):
        return replace(obj, **{head: value})
    obj = copy.copy(obj)
    setattr(obj, head, value)
    return obj


def _refusal(path, valid) -> str:
    flag = "--" + path[-1].replace("_", "-")
    return re.escape(f"invalid argument: {flag} {BAD!r} is not one of {list(valid)}")


def test_the_literal_fields_are_found():
    """The enumeration sees the fields of both levels (a check that found none would pass)."""
    names = {p[-1] for p, _ in TRAIN_LITERALS}
    assert {"preset", "device", "precision", "render_on", "boot_source", "ema_schedule"} <= names
    assert {f.name for f in fields(ABConfig)
            if typing.get_origin(typing.get_type_hints(ABConfig)[f.name]) is Literal} <= names
    assert {p[-1] for p, _ in EVAL_LITERALS} == {"kind", "device"}
    check_train_args(Args())  # the defaults pass
    check_eval_args(EvalArgs())


@pytest.mark.parametrize("path,valid", TRAIN_LITERALS, ids=[".".join(p) for p, _ in TRAIN_LITERALS])
def test_train_refuses_every_literal_field_outside_its_type(path, valid):
    with pytest.raises(SystemExit, match=_refusal(path, valid)):
        check_train_args(_with(Args(), path, BAD))


@pytest.mark.parametrize("path,valid", EVAL_LITERALS, ids=[".".join(p) for p, _ in EVAL_LITERALS])
def test_evaluate_refuses_every_literal_field_outside_its_type(path, valid):
    with pytest.raises(SystemExit, match=_refusal(path, valid)):
        check_eval_args(_with(EvalArgs(), path, BAD))


def test_a_bad_choice_is_refused_before_any_work(tmp_path, monkeypatch):
    """``train()`` stops at the door: no run folder, nothing started (the first step of the
    work after the check fails the test at once rather than training)."""
    import agents.train_value as tv
    from agents.train_value import train

    monkeypatch.setattr(tv, "launched", lambda: pytest.fail("the work started"))
    args = replace(Args(), runs_dir=str(tmp_path), name="run", render_on="gpu")
    with pytest.raises(SystemExit, match=r"--render-on 'gpu' is not one of \['device', 'cpu'\]"):
        train(args)
    assert not list(tmp_path.iterdir())


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    pick: Literal["x", "y"] | None = None
    either: typing.Optional[Literal[1, 2]] = 1  # noqa: UP045 - the old spelling too
    text: str = "free"
    inner: Inner = field(default_factory=Inner)


def test_optional_literals_and_nested_dataclasses():
    literal_choices(Outer())
    literal_choices(Outer(pick="y", either=None, text="anything"))
    with pytest.raises(ValueError, match=r"--pick 'z' is not one of \['x', 'y', None\]"):
        literal_choices(Outer(pick="z"))
    with pytest.raises(ValueError, match=r"--either 3 is not one of \[1, 2, None\]"):
        literal_choices(Outer(either=3))
    with pytest.raises(ValueError, match=r"--mode 'c' is not one of \['a', 'b'\]"):
        literal_choices(Outer(inner=Inner(mode="c")))
    with pytest.raises(TypeError, match="inner .* must be an instance of Inner, not dict"):
        literal_choices(Outer(inner={"mode": "a"}))


def test_no_hand_written_list_repeats_a_literal():
    """arg_checks.py holds no list / tuple / set of constants equal to a Literal's values: the
    values live in the types alone (a copy would drift)."""
    literals = {frozenset(valid) for _, valid in TRAIN_LITERALS + EVAL_LITERALS}
    tree = ast.parse(Path(arg_checks.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple | ast.Set) and node.elts and all(
                isinstance(e, ast.Constant) for e in node.elts):
            values = frozenset(e.value for e in node.elts)
            assert values not in literals, f"line {node.lineno}: {sorted(values)}"
