"""Where a model's files are: a local folder or a Hugging Face hub id, from the user's cache.

The hub is contacted only when it can be reached (a quick probe first, so that a machine
without network fails in seconds instead of retrying for half a minute), and offline mode
(``HF_HUB_OFFLINE=1`` or ``local_files_only``) is respected. Every failure is a one-line
:class:`ModelLoadError` naming the model and what is missing. Nothing here loads weights.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from framepipe.errors import ModelLoadError
from framepipe.generate.config import ModelConfig

log = logging.getLogger(__name__)

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_offline() -> bool:
    """Whether the user asked for offline mode (read at call time, not at import)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


@functools.lru_cache(maxsize=4)
def hub_reachable(endpoint: str | None = None, timeout_s: float = 3.0) -> bool | None:
    """True/False: whether a TCP connection to the hub opens within ``timeout_s``. None
    when a proxy is configured (the direct probe would say nothing)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """No progress bars from transformers while loading or saving (library code never
    prints; the CLI owns the terminal)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def locate(cfg: ModelConfig) -> tuple[str, Path | None, dict[str, Any]]:
    """Where the model is: (what to give ``from_pretrained``, local folder or None, kwargs)."""
    kwargs: dict[str, Any] = {"trust_remote_code": bool(cfg.trust_remote_code)}
    path = Path(cfg.model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: not a model folder (it is a file)")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path}: not a model folder (no config.json)")
        _check_weights_in(path, cfg.model)
        kwargs["local_files_only"] = True
        return str(path.resolve()), path.resolve(), kwargs

    repo = cfg.model
    looks_like_path = repo.startswith((".", "/", "~")) or repo.count("/") > 1 or "\\" in repo
    if not looks_like_path:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(repo)
        except HFValidationError:
            looks_like_path = True
    if looks_like_path:
        raise ModelLoadError(f"{repo}: no such model folder, and not a Hugging Face hub id")
    if cfg.revision is not None:
        kwargs["revision"] = cfg.revision

    from huggingface_hub import constants

    cached = _cached(repo, "config.json", cfg.revision)
    offline = cfg.local_files_only if cfg.local_files_only is not None else hub_offline()
    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if offline:
        if not cached:
            raise ModelLoadError(
                f"{repo}: not in {where} and offline mode is on; download it where the hub "
                f"can be reached (`hf download {repo}`) or pass a local folder"
            )
        kwargs["local_files_only"] = True
    else:
        reachable = hub_reachable()
        if reachable is False:
            if not cached:
                raise ModelLoadError(
                    f"{repo}: not in {where} and the hub ({constants.ENDPOINT}) cannot be "
                    "reached; download it where it can be or pass a local folder"
                )
            log.info("%s: the hub cannot be reached; using the cached copy", repo)
            kwargs["local_files_only"] = True
    if kwargs.get("local_files_only"):
        _check_weights_cached(repo, cfg.revision)
    return repo, None, kwargs


def _cached(repo: str, filename: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo, filename, revision=revision)
    except Exception:  # a malformed cache entry counts as not cached
        return False
    return isinstance(hit, str)


def _check_weights_in(folder: Path, name: str) -> None:
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise ModelLoadError(
            f"{name}: only pickle (.bin/.pt) weights in the folder; framepipe loads safetensors "
            "only (convert them with save_pretrained(..., safe_serialization=True))"
        )
    raise ModelLoadError(f"{name}: no weights in the folder (no *.safetensors file)")


def _check_weights_cached(repo: str, revision: str | None) -> None:
    if _cached(repo, "model.safetensors", revision) or _cached(
        repo, "model.safetensors.index.json", revision
    ):
        return
    if _cached(repo, "pytorch_model.bin", revision):
        raise ModelLoadError(
            f"{repo}: only pickle (.bin) weights in the cache; framepipe loads safetensors only"
        )
    raise ModelLoadError(
        f"{repo}: the config is in the Hugging Face cache but the weights are not, and the "
        "hub cannot be used (offline); download the whole model first"
    )
