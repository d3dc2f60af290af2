"""A trained encoder for others to load: ``model.safetensors`` + ``config.json`` in one folder.

Load it (a fresh process imports torch, safetensors and :mod:`agents.method.encoders`, none of the
training code: no ``agents.method.ab`` / ``agents.method.data`` / ``agents.infra.checkpoint``,
tyro, gymnasium)::

    from agents.evaluation.export import load_encoder; enc = load_encoder("runs/<run>/encoder")
    features = enc(views)       # views (B, 3, H, W) uint8 in [0, 255], RGB, H == W ==
                                # enc.view_size -> features (B, D) float32, D == enc.embed_dim
    tokens = enc.tokens(views)  # (B, T, D) float32, T == enc.num_tokens (the token grid)

``enc`` is a plain ``nn.Module`` (:class:`ExportedEncoder`) in eval mode; ``enc.backbone`` is the
project's :class:`agents.method.encoders.Encoder` (``backbone(views) -> tokens``,
``backbone.pool``).

Written by ``python agents/evaluate.py --checkpoint runs/<run> --export DIR`` (refuses a
non-empty ``DIR``) and at the end of every training run into ``runs/<run>/encoder/``
(:func:`export_encoder`). The folder:

- ``model.safetensors``: the online encoder's ``state_dict`` (float32; keys as in
  ``make_encoder(architecture, **arguments).state_dict()``; no pickle);
- ``config.json``: ``format`` / ``format_version``, ``architecture`` (a key of
  ``agents.method.encoders.ENCODERS``) and ``arguments`` (every constructor argument), ``input``
  (dtype
  uint8, range, channel order and the mean / std the encoder applies itself), ``tokens``
  (count, dim, grid), ``feature_dim``, ``pooling`` (``"mean"``: the mean over tokens, the
  feature of the linear and kNN probes; the attentive probe reads the tokens), ``source``
  (checkpoint and step), ``weights_sha256`` (of the ``model.safetensors`` file, checked on
  every load) and ``imgmdp_version``.

``format_version`` 2 names the view's side ``view_size`` (top level and in ``arguments``);
version 1 (written before the rename) named it ``image_size``: :func:`read_config` reads both,
giving version 1's field its new name (the one place that knows the old one).

The folder is written beside its destination and renamed into place: a crash leaves the old
export or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from agents.infra.atomic import fsync_dir
from agents.method.encoders import (
    ENCODERS,
    MEAN,
    STD,
    Encoder,
    constructor_arguments,
    make_encoder,
    upgrade_encoder_config,
)

__all__ = [
    "CONFIG",
    "ENCODER_DIR",
    "WEIGHTS",
    "ExportError",
    "ExportedEncoder",
    "export_checkpoint",
    "export_encoder",
    "is_export",
    "load_encoder",
    "read_config",
]

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
ENCODER_DIR = "encoder"  # the export's folder inside a run folder
FORMAT, FORMAT_VERSION = "imgmdp-encoder", 2
_REQUIRED = ("architecture", "arguments", "weights_sha256")
_WHERE = ("the folder written by `python agents/evaluate.py --checkpoint runs/<run> --export "
          "DIR`, or runs/<run>/encoder (written at the end of training)")


class ExportError(ValueError):
    """An encoder export that cannot be written or loaded; the message names the file."""


class ExportedEncoder(nn.Module):
    """A trained encoder as a plain module: ``forward(views) -> features``.

    views: ``(B, 3, H, W)`` uint8 in [0, 255], RGB, ``H == W == view_size`` (normalised inside:
    ``(views / 255 - mean) / std``, the ``input`` of ``config.json``; float views are refused).
    forward -> ``(B, D)`` float32, the mean over tokens; :meth:`tokens` -> ``(B, T, D)``.
    Attributes: ``embed_dim`` (D), ``num_tokens`` (T), ``view_size``, ``export_config`` (the
    folder's ``config.json``), ``backbone`` (the :class:`agents.method.encoders.Encoder`).
    """

    def __init__(self, backbone: Encoder, export_config: dict) -> None:
        super().__init__()
        self.backbone = backbone
        self.export_config = export_config
        self.embed_dim = backbone.embed_dim
        self.num_tokens = backbone.num_tokens
        self.view_size = backbone.view_size

    def tokens(self, views: torch.Tensor) -> torch.Tensor:
        """views ``(B, 3, H, W)`` uint8 -> tokens ``(B, T, D)`` float32."""
        return self.backbone(views)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """views ``(B, 3, H, W)`` uint8 -> features ``(B, D)`` float32 (mean over tokens)."""
        return self.backbone.pool(self.backbone(views))


# ---------------------------------------------------------------------------------------------
# Loading (torch, safetensors and agents.method.encoders only)
# ---------------------------------------------------------------------------------------------
def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder meant as an encoder export (it holds ``model.safetensors``
    or an export's ``config.json``); whether it loads is :func:`load_encoder`'s to say."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / WEIGHTS).is_file():
        return True
    try:
        return json.loads((p / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _folder(path: str | os.PathLike) -> Path:
    """The export folder ``path`` names, or an :class:`ExportError` saying what it is instead."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"no encoder export at {p}: pass {_WHERE}")
    if p.is_dir():
        if not (p / WEIGHTS).exists() and (p / "checkpoint.pt").exists():
            raise ExportError(f"{p} is a run folder, not an encoder export: its export is "
                              f"{p / ENCODER_DIR} (written at the end of training), or export "
                              f"its checkpoint with `python agents/evaluate.py --checkpoint {p} "
                              "--export DIR`")
        return p
    if p.name in (WEIGHTS, CONFIG):
        raise ExportError(f"{p} is a file of an encoder export: pass its folder {p.parent}")
    raise ExportError(f"{p} is a file, not an encoder export folder (a training checkpoint? "
                      "agents.method.ab.load_encoder reads those, or export it with `python "
                      f"agents/evaluate.py --checkpoint {p} --export DIR`); pass {_WHERE}")


def read_config(path: str | os.PathLike) -> dict:
    """The checked ``config.json`` of an export folder (format, version, architecture), in
    the current version's names (:func:`_upgrade`: version 1's ``image_size`` is ``view_size``)."""
    cfg = _folder(path) / CONFIG
    if not cfg.is_file():
        raise ExportError(f"{cfg} is missing: an encoder export holds {CONFIG} and {WEIGHTS}; "
                          f"pass {_WHERE}")
    try:
        config = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ExportError(f"{cfg} is not readable JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ExportError(f"{cfg} is not an encoder export's config (format {got!r}, expected "
                          f"{FORMAT!r}; a run's config.json? pass {_WHERE})")
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ExportError(f"{cfg} has format_version {version!r}; this code reads versions 1 to "
                          f"{FORMAT_VERSION} (a newer imgmdp wrote it?)")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ExportError(f"{cfg} lacks {missing}: every export's config has {list(_REQUIRED)}")
    if config["architecture"] not in ENCODERS:
        raise ExportError(f"{cfg}: unknown architecture {config['architecture']!r}; valid: "
                          f"{sorted(ENCODERS)} (agents.method.encoders.ENCODERS)")
    if not isinstance(config["arguments"], dict):
        raise ExportError(f"{cfg}: arguments must be a dict of constructor arguments, got "
                          f"{config['arguments']!r}")
    return _upgrade(config)


def _upgrade(config: dict) -> dict:
    """A checked export config in ``FORMAT_VERSION``'s names. Version 1 called the view's side
    ``image_size`` (top level and in ``arguments``); version 2 calls it ``view_size``.
    ``format_version`` is left as the file says (what was read)."""
    if config["format_version"] >= 2:
        return config
    config = {**config, "arguments": upgrade_encoder_config(config["arguments"])}
    if "image_size" in config:
        config["view_size"] = config.pop("image_size")
    return config


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> ExportedEncoder:
    """The encoder of an export folder, verified, in eval mode on ``device``:
    ``enc(views (B, 3, H, W) uint8) -> (B, D) float32``, ``enc.tokens(views) -> (B, T, D)``.

    Raises :class:`ExportError` naming the file: a missing folder or file, a config that is not
    an export's, an unknown architecture, weights whose sha256 differs from the config's (a
    corrupted or partly copied file) or that do not fit the architecture."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    config = read_config(path)
    folder = Path(path)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ExportError(f"{weights} is missing: {folder / CONFIG} describes weights that are "
                          "not there (copy the whole folder)")
    data = weights.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != config["weights_sha256"]:
        raise ExportError(f"{weights} does not match {folder / CONFIG}: its sha256 is "
                          f"{digest[:16]}..., the config says {str(config['weights_sha256'])[:16]}"
                          "... (a corrupted or partly copied file, or files of two exports)")
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ExportError(f"{weights} is not a readable safetensors file ({e})") from None
    arch = config["architecture"]
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in config["arguments"].items()}
    try:
        backbone = make_encoder(arch, **args)
        backbone.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ExportError(f"{weights} does not fit architecture {arch!r} with arguments "
                          f"{config['arguments']} ({folder / CONFIG}): {e}") from None
    return ExportedEncoder(backbone, config).to(device).eval()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgmdp")
    except PackageNotFoundError:
        return "unknown"


def _check_target(out: Path, replace: bool) -> list[str]:
    """The files already in ``out``; refuses a non-empty folder unless ``replace`` and it is an
    encoder export (the run's own, rewritten at the end of a resumed run)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder: pass a new or empty folder")
    found = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if found and not (replace and is_export(out)):
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ExportError(f"{out} is not empty ({shown}): an export never overwrites a folder; "
                          "pass a new or empty folder, or remove this one first")
    return found


def export_encoder(encoder: nn.Module, out_dir: str | os.PathLike, *, step: int | None = None,
                   source: str | os.PathLike | None = None, replace: bool = False) -> Path:
    """Write ``encoder`` (built by ``make_encoder``; or an :class:`ExportedEncoder`) to
    ``out_dir`` as ``model.safetensors`` + ``config.json``; returns the folder.

    step, source: the training step and checkpoint the weights come from (recorded in the
    config). ``out_dir`` must be new or empty; replace: may also replace an existing encoder
    export (the run's own ``encoder/``, never another folder). The folder is built beside
    ``out_dir`` and renamed into place."""
    from safetensors.torch import save as save_safetensors

    from agents.infra.checkpoint import atomic_write

    if isinstance(encoder, ExportedEncoder):
        encoder = encoder.backbone
    spec = getattr(encoder, "config", None)
    if not isinstance(encoder, Encoder) or not isinstance(spec, dict):
        raise TypeError("export_encoder needs an encoder built by "
                        "agents.method.encoders.make_encoder "
                        f"(it records its arguments in .config), got {type(encoder).__name__}")
    out = Path(out_dir)
    _check_target(out, replace)
    arch = spec.get("kind", "cnn")
    state = {k: v.detach().to("cpu", copy=True).contiguous()
             for k, v in encoder.state_dict().items()}
    data = save_safetensors(state, metadata={"format": "pt", "imgmdp": FORMAT,
                                             "architecture": arch})
    side = math.isqrt(encoder.num_tokens)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "class": type(encoder).__name__,
        "arguments": constructor_arguments(spec),
        "view_size": encoder.view_size,
        "input": {"shape": ["B", 3, encoder.view_size, encoder.view_size], "dtype": "uint8",
                  "range": [0, 255], "channels": "RGB",
                  "normalisation": "inside the encoder: (views / 255 - mean) / std per channel",
                  "mean": list(MEAN), "std": list(STD)},
        "tokens": {"count": encoder.num_tokens, "dim": encoder.embed_dim,
                   "grid": [side, side] if side * side == encoder.num_tokens else None},
        "feature_dim": encoder.embed_dim,
        "pooling": "mean",
        "pooling_note": ("features = mean over tokens (the linear and kNN probes' input); the "
                         "attentive probe reads the tokens"),
        "source": {"checkpoint": str(source) if source is not None else None,
                   "step": int(step) if step is not None else None, "network": "online"},
        "weights_file": WEIGHTS,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "weights_dtype": "float32",
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "imgmdp_version": _project_version(),
        "torch_version": torch.__version__.split("+")[0],
    }
    full = Path(os.path.abspath(out))
    if full == Path.cwd():  # it is renamed into place: the process would sit in a removed folder
        raise ExportError(f"{out} is the current folder: pass a new folder, e.g. ./encoder")
    full.parent.mkdir(parents=True, exist_ok=True)
    tmp = full.with_name(f".{full.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this pid's killed writer
    tmp.mkdir()
    try:
        atomic_write(tmp / WEIGHTS, data)
        atomic_write(tmp / CONFIG, (json.dumps(config, indent=2) + "\n").encode())
        if _check_target(full, replace):  # replace the run's own export: old aside, new in
            old = full.with_name(f".{full.name}.old{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(full, old)
            try:
                os.replace(tmp, full)
            except BaseException:
                os.replace(old, full)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:  # new or empty: one rename (an empty folder is replaced; a filled one refused)
            os.replace(tmp, full)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(full.parent)
    return out


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export the online encoder of a ``train_value.py`` checkpoint (or run folder) to the new
    or empty folder ``out_dir`` (:func:`export_encoder`). Raises :class:`ExportError` (the
    folder) or ``agents.infra.checkpoint.CheckpointError`` (the checkpoint)."""
    from agents.infra.checkpoint import read_checkpoint, require, resolve
    from agents.method.ab import encoder_of

    _check_target(Path(out_dir), replace=False)  # before reading a large checkpoint
    path = resolve(checkpoint)
    ckpt = read_checkpoint(path)
    require(ckpt, ("encoder", "agent"), path, "exporting its encoder")
    step = ckpt.get("step")
    return export_encoder(encoder_of(ckpt), out_dir, source=path,
                          step=int(step) if step is not None else None)


def export_cli(checkpoint: str | os.PathLike | None, out_dir: str | os.PathLike) -> None:
    """``evaluate.py --checkpoint C --export DIR``: export, print what was written; errors
    become ``SystemExit`` naming the flag."""
    from agents.infra.checkpoint import CheckpointError

    if checkpoint is None:
        raise SystemExit("--export needs --checkpoint (the run folder or checkpoint.pt whose "
                         "encoder to export)")
    try:
        out = export_checkpoint(checkpoint, out_dir)
    except ExportError as e:
        raise SystemExit(f"--export: {e}") from None
    except CheckpointError as e:
        raise SystemExit(f"--checkpoint: {e}") from None
    c = read_config(out)
    print(f"wrote {out}/{WEIGHTS} + {CONFIG}: {c['architecture']} encoder, "
          f"{c['view_size']}x{c['view_size']} uint8 views -> {c['feature_dim']}-d features "
          f"({c['tokens']['count']} tokens), step {c['source']['step']}, sha256 "
          f"{c['weights_sha256'][:16]}...\nload it with: "
          "from agents.evaluation.export import load_encoder; "
          f"enc = load_encoder({str(out)!r})")
