"""Where a model's files are: a local folder or a Hugging Face hub id, from the user's cache.

Offline mode is huggingface_hub's own (``HF_HUB_OFFLINE=1``) or ``local_files_only``. Online,
one metadata request of the model's config with a short timeout (huggingface_hub's own
request, through its proxies and endpoint) tells whether the hub can be reached, so that a
machine without network uses its cache or fails in seconds instead of retrying for half a
minute. Every failure is a one-line :class:`ModelLoadError` naming the model and what is
missing. Nothing here loads weights; :func:`check_loaded_weights` judges what a load found.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from framepipe.errors import ModelLoadError
from framepipe.generate.config import ModelConfig

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 5.0
"""How long the hub may take to answer the first request before it counts as unreachable."""


@functools.lru_cache(maxsize=16)
def hub_reachable(repo: str, revision: str | None = None) -> bool:
    """Whether the hub answers a metadata request for ``repo``'s config within
    :data:`HUB_TIMEOUT_S` (an answer that the repository or file does not exist counts: the
    hub is there, and loading it gives that error)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(
            hf_hub_url(repo, "config.json", revision=revision), timeout=HUB_TIMEOUT_S
        )
    except HfHubHTTPError:
        return True
    except Exception as exc:  # no network, DNS, a proxy that refuses: the library's errors
        log.debug("%s: the hub cannot be reached (%s)", repo, exc)
        return False
    return True


@contextlib.contextmanager
def quiet_hf(*, errors_only: bool = False) -> Iterator[None]:
    """No progress bars from transformers while loading or saving (library code never
    prints; the CLI owns the terminal). ``errors_only``: its warnings held back too (a
    weights load: its multi-line LOAD REPORT of missing tensors is
    :func:`check_loaded_weights`' one line)."""
    from transformers.utils import logging as hf_logging

    was, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity(max(level, hf_logging.ERROR))
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if was:
            hf_logging.enable_progress_bar()


def locate(cfg: ModelConfig, folder: Path | None = None) -> tuple[str, Path | None, dict[str, Any]]:
    """Where the model is: (what to give ``from_pretrained``, local folder or None, kwargs).

    ``folder``: the model's folder as it was found where the run was planned (a cluster's
    driver), looked at instead of ``cfg.model`` (a relative path, or a hub id that a folder
    of the driver's working directory shadowed, would name something else in a worker's)."""
    kwargs: dict[str, Any] = {"trust_remote_code": bool(cfg.trust_remote_code)}
    path = Path(cfg.model).expanduser() if folder is None else folder
    if folder is not None and not path.exists():
        raise ModelLoadError(f"{cfg.model}: no model folder {folder} on this machine")
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
    offline = cfg.local_files_only
    if offline is None:
        offline = bool(constants.HF_HUB_OFFLINE)
    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if offline:
        if not cached:
            raise ModelLoadError(
                f"{repo}: not in {where} and offline mode is on; download it where the hub "
                f"can be reached (`hf download {repo}`) or pass a local folder"
            )
        kwargs["local_files_only"] = True
    elif not hub_reachable(repo, cfg.revision):
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


def check_loaded_weights(name: str, info: dict[str, Any], *, random_weights: bool) -> None:
    """ModelLoadError when the checkpoint lacked some of the model's tensors, or held them
    with another shape (``info``: transformers' ``output_loading_info``): transformers fills
    those with random values and only logs it, and answers from partly random weights must
    never pass as the model's. A model labelled random (the tiny test model) is noise anyway:
    it is only logged."""
    missing = sorted(info.get("missing_keys") or ())
    missing += sorted(
        str(m[0] if isinstance(m, tuple) else m) for m in info.get("mismatched_keys") or ()
    )
    if not missing:
        return
    few = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    what = (
        f"{len(missing)} of the model's tensors are missing from its checkpoint "
        f"or of another shape ({few})"
    )
    if random_weights:
        log.warning("%s: %s; its weights are random anyway", name, what)
        return
    raise ModelLoadError(
        f"{name}: {what}; they would be random, so its answers would not be the model's"
    )


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
