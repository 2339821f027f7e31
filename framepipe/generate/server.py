"""The ``openai`` backend: an OpenAI-compatible server answers (vLLM, SGLang, TGI,
``transformers serve``), the pipeline stays the same.

Each question about a clip is one chat request: one user message with the clip's frames as
``image_url`` parts (PNG data URLs, lossless, made where the clip was decoded) followed by
the question, so the server sees the pixels the in-process backend would. When the served
model's processor can be read here (a local folder, or the Hugging Face cache: nothing is
downloaded) and resizing first gives it exactly the same pixels, frames are sent at the
model's input size (:class:`FrameReduce`). The settings map to the API: ``max_new_tokens``
to ``max_tokens``; greedy decoding to ``temperature`` 0; sampling to ``temperature``,
``top_p`` and ``seed``. ``top_k``, beams and a repetition penalty have no OpenAI API
equivalent: the server's own ``top_k`` applies, the other two are refused.

Requests run ``max_concurrency`` at a time. A connection error, a 429 or a 5xx is retried
with exponential backoff (the server's ``Retry-After`` when it sends one), at most
``retries`` times; a request that still fails makes its clip a failed record with the
server's message, and the run goes on. An error every request would hit stops the run after
the first one (:class:`~framepipe.errors.StopRunError`), with one line that names the fix: a
server that takes fewer images per prompt than a clip has (vLLM without
``--limit-mm-per-prompt``), a context too short for n frames, a model the server does not
serve, a refused API key. A server that cannot be reached at start is a one-line error
before any decoding. Records name the backend, the base URL (never a key) and the server's
model id; resume keys the backend and the model.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from framepipe.errors import (
    ConfigError,
    FramepipeError,
    GenerationError,
    ModelLoadError,
    StopRunError,
)
from framepipe.generate.backend import BACKENDS
from framepipe.generate.config import Answer, GenerationSettings, ModelConfig, Prepared, Request
from framepipe.prompt import as_texts, user_body

log = logging.getLogger(__name__)


@dataclass
class APISettings(GenerationSettings):
    """:class:`GenerationSettings` as the OpenAI API takes them: what records and resume keys
    name is what is sent (no ``top_k``, beams or repetition penalty)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_beams != 1 or self.repetition_penalty != 1.0:
            raise ConfigError(
                "--num-beams and --repetition-penalty have no OpenAI API equivalent "
                "(--backend openai): leave them at 1"
            )

    def to_json(self) -> dict[str, Any]:
        skip = ("top_k", "num_beams", "repetition_penalty")
        return {k: v for k, v in super().to_json().items() if k not in skip}

    def body(self) -> dict[str, Any]:
        """The request's generation parameters."""
        out: dict[str, Any] = {"max_tokens": self.max_new_tokens}
        if not self.do_sample:
            return {**out, "temperature": 0.0}
        out.update(temperature=self.temperature, top_p=self.top_p)
        return out if self.seed is None else {**out, "seed": self.seed}


@dataclass(frozen=True)
class FrameReduce:
    """Resize frames to the model's input size before they are sent (the processor resizes
    to this size first anyway: checked to give the same pixels)."""

    height: int
    width: int
    resample: int

    def images(self, frames: Iterable[np.ndarray]) -> list[np.ndarray]:
        from PIL import Image

        size = (self.width, self.height)
        resize = Image.Resampling(self.resample)
        return [np.asarray(Image.fromarray(np.asarray(f)).resize(size, resize)) for f in frames]


def frame_reduce_for(spec: Any) -> FrameReduce | None:
    """The reduction for ``spec``'s processor (a :class:`~framepipe.generate.ModelSpec`), when
    resizing first gives the processor exactly the same pixels (checked on random frames of
    two sizes); None otherwise (frames are then sent at full size)."""
    ip: Any = getattr(getattr(spec, "processor", None), "image_processor", None)
    if ip is None or not callable(ip):
        return None
    size = getattr(ip, "size", None)
    resample = getattr(ip, "resample", None)
    if isinstance(size, dict):
        height, width = size.get("height"), size.get("width")
    else:  # transformers' SizeDict
        height, width = getattr(size, "height", None), getattr(size, "width", None)
    if height is None or width is None or resample is None or not getattr(ip, "do_resize", 1):
        return None
    red = FrameReduce(int(height), int(width), int(resample))
    try:
        rng = np.random.default_rng(0)
        for shape in ((48, 64, 3), (red.height * 2 + 3, red.width + 5, 3)):
            img = rng.integers(0, 256, shape, dtype=np.uint8)
            a = ip(images=[img], return_tensors="np")["pixel_values"]
            b = ip(images=red.images([img]), return_tensors="np")["pixel_values"]
            if not np.array_equal(a, b):
                log.info("frames are sent at full size: resizing first changes the model's input")
                return None
    except Exception:
        log.debug("frames are sent at full size: the processor check failed", exc_info=True)
        return None
    return red


@dataclass(frozen=True)
class EncodeImages:
    """Frames -> PNG data URLs (lossless), resized first by ``reduce`` when given; runs where
    clips are decoded."""

    reduce: FrameReduce | None = None

    def __call__(self, images: Sequence[np.ndarray]) -> Prepared:
        from PIL import Image

        frames = self.reduce.images(images) if self.reduce is not None else images
        urls = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(np.asarray(f)).save(buf, format="PNG", compress_level=1)
            urls.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
        return Prepared(len(urls), urls)


def _message(raw: bytes) -> str:
    """The server's error message from its response body (OpenAI, vLLM, TGI or FastAPI
    shapes), as one line."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        for found in (
            err.get("message") if isinstance(err, dict) else err,
            body.get("message"),
            body.get("detail"),
        ):
            if found:
                text = found if isinstance(found, str) else json.dumps(found)
                break
    return " ".join(text.split())[:300]


_CONTEXT = re.compile(
    r"context length|max_model_len|max-model-len|maximum model length|takes at most \d+"
    r"|max_new_tokens`? must be <=",
    re.IGNORECASE,
)


class OpenAIBackend:
    """Any OpenAI-compatible server at ``base_url`` (``http://host:8000/v1``).

    ``model``: the server's model id (None: the one model it serves). ``api_key``: default
    ``OPENAI_API_KEY``. ``max_concurrency``: requests in flight at once; a batch holds at
    least twice as many clips. ``retries``, ``backoff_s``: retries of a request after a
    connection error, 429 or 5xx, and the first wait (doubled each time, 30 s at most).
    """

    name = "openai"
    wants_gpu = False

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        settings: GenerationSettings | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 600.0,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        url = urlsplit(base_url or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"--base-url {base_url!r} is not an http(s) URL")
        if max_concurrency < 1:
            raise ConfigError(f"--max-concurrency ({max_concurrency}) must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        """The server's model id (resolved by :meth:`check` when not given)."""
        s = settings or GenerationSettings()
        batch = max(s.batch_size, 2 * max_concurrency)
        self.settings = APISettings(**{**dataclasses.asdict(s), "batch_size": batch})
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self.spec: Any = None
        """The served model's config and processor, when they can be read here (else None)."""
        self.reduce: FrameReduce | None = None
        self.random = False
        """Whether the served model is known (from its local copy) to have random weights."""
        self._checked = False

    def __getstate__(self) -> dict[str, Any]:  # the spec (processor, tokenizer) stays here
        return {**self.__dict__, "spec": None}

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBackend({self.where()!r}, model={self.model!r})"

    def where(self) -> str:
        """The base URL as records name it (no user or password)."""
        url = urlsplit(self.base_url)
        host = url.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{url.port}" if url.port else ""
        return urlunsplit((url.scheme, netloc, url.path, url.query, ""))

    # -- before loading ------------------------------------------------------------------------
    def check(self, n: int, questions: Iterable[Sequence[str]], system: str | None) -> None:
        """Reach the server and find the model (one-line errors before any decoding)."""
        for qs in questions:
            as_texts(list(qs))
        if self._checked:
            return
        try:
            data = self._request("GET", "/models", None, timeout=15)
        except urllib.error.HTTPError as exc:
            raise ModelLoadError(
                f"the server at {self.where()} answered {exc.code} to GET /models: "
                f"{_message(exc.read())}"
            ) from None
        except OSError as exc:
            why = getattr(exc, "reason", None) or exc
            raise ModelLoadError(
                f"cannot reach the server at {self.where()} ({why}): start it, or fix --base-url"
            ) from None
        served = [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]
        if self.model is None:
            if len(served) != 1:
                raise ConfigError(
                    f"the server at {self.where()} serves {len(served)} models "
                    f"({', '.join(served) or 'none'}): name one with --model"
                )
            self.model = served[0]
        elif self.model not in served:
            raise ConfigError(self._not_served(", ".join(served) or "none"))
        self.spec = self._local_spec()
        self.reduce = frame_reduce_for(self.spec)
        self.random = bool(self.spec is not None and self.spec.random_weights)
        self._checked = True

    def _not_served(self, detail: str) -> str:
        return (
            f"the server at {self.where()} does not serve model {self.model!r} ({detail}); "
            "name one it serves with --model"
        )

    def _local_spec(self) -> Any:
        """The served model's spec when its files are here (never downloaded), else None."""
        from framepipe.generate.spec import ModelSpec

        try:
            return ModelSpec.inspect(ModelConfig(model=str(self.model), local_files_only=True))
        except Exception as exc:
            log.debug("%s: no local copy of the processor (%s)", self.model, exc)
            return None

    def key(self) -> dict[str, Any]:
        return {"backend": self.name, "id": self.model}

    def random_weights(self) -> bool:
        return self.random

    def prepare(self) -> EncodeImages:
        return EncodeImages(self.reduce)

    def load(self) -> OpenAIClient:
        if not self._checked:
            self.check(0, (), None)
        return OpenAIClient(self)

    # -- HTTP --------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data, headers, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        return out if isinstance(out, dict) else {}


class OpenAIClient:
    """The loaded ``openai`` backend: a pool of ``max_concurrency`` HTTP requests."""

    def __init__(self, spec: OpenAIBackend) -> None:
        self.spec = spec
        self.pool = ThreadPoolExecutor(spec.max_concurrency, thread_name_prefix="framepipe-http")
        self._stop: StopRunError | None = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        s = self.spec
        return {
            "backend": s.name,
            "base_url": s.where(),
            "id": s.model,
            "random_weights": s.random_weights(),
        }

    def answer_each(self, requests: Sequence[Request]) -> list[Answer | FramepipeError]:
        """One answer per request (its questions asked concurrently), or its clip's error;
        raises StopRunError for an error every request would hit."""
        asks = [(i, q) for i, r in enumerate(requests) for q in range(len(r.questions))]
        done = list(self.pool.map(lambda a: self._ask(requests[a[0]], a[1]), asks))
        if self._stop is not None:
            raise self._stop
        got: dict[tuple[int, int], Any] = dict(zip(asks, done))
        out: list[Answer | FramepipeError] = []
        for i, r in enumerate(requests):
            mine = [got[(i, q)] for q in range(len(r.questions))]
            err = next((x for x in mine if isinstance(x, FramepipeError)), None)
            if err is not None:
                out.append(err)
                continue
            texts = [user_body(len(r.images), [q], r.segments) for q in r.questions]
            out.append(
                Answer(
                    prompt=texts[0],
                    answers=[m[0] for m in mine],
                    generate_s=round(sum(m[3] for m in mine), 4),
                    prompt_tokens=mine[0][1],
                    new_tokens=[m[2] for m in mine],
                    prompts=texts,
                )
            )
        return out

    def _ask(self, r: Request, q: int) -> tuple[str, int, int, float] | FramepipeError:
        """One question: (answer, prompt tokens, new tokens, seconds), or the error."""
        s = self.spec
        urls = r.images.data if isinstance(r.images, Prepared) else EncodeImages()(r.images).data
        content: list[dict[str, Any]] = []
        if r.segments is None:
            content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        else:
            it = iter(urls)
            for seg in r.segments:
                content.append({"type": "text", "text": seg.text})
                content += [
                    {"type": "image_url", "image_url": {"url": next(it)}}
                    for _ in range(seg.num_images)
                ]
        content.append({"type": "text", "text": r.questions[q]})
        messages = [{"role": "user", "content": content}]
        if r.system is not None:
            messages.insert(0, {"role": "system", "content": r.system})
        body = {"model": s.model, "messages": messages, **s.settings.body()}
        t0 = time.perf_counter()
        try:
            data = self._post(body, len(urls))
        except FramepipeError as exc:
            return exc
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return GenerationError(f"the server at {s.where()} sent no answer: {str(data)[:200]}")
        usage = data.get("usage") or {}
        took = time.perf_counter() - t0
        return (
            text.strip(),
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            took,
        )

    def _post(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        """POST /chat/completions, retried with backoff on connection errors, 429 and 5xx."""
        s = self.spec
        why = ""
        for attempt in range(s.retries + 1):
            if self._stop is not None:
                raise self._stop
            wait = min(30.0, s.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            try:
                return s._request("POST", "/chat/completions", body, timeout=s.timeout_s)
            except urllib.error.HTTPError as exc:
                why = f"{exc.code}: {_message(exc.read())}"
                fatal = self._fatal(exc.code, why, n)
                if fatal is not None:
                    with self._lock:
                        self._stop = self._stop or StopRunError(fatal)
                    raise self._stop from None
                if exc.code != 429 and exc.code < 500:
                    raise GenerationError(f"the server at {s.where()} refused ({why})") from None
                after = exc.headers.get("Retry-After") if exc.headers else None
                if after and after.strip().isdigit():
                    wait = min(60.0, float(after))
            except (OSError, ValueError) as exc:  # refused, reset, timed out, not JSON
                why = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
            if attempt < s.retries:
                log.debug("%s: %s; retrying in %.1f s", s.where(), why, wait)
                time.sleep(wait)
        tries = s.retries + 1
        raise GenerationError(f"the server at {s.where()} failed ({why}) after {tries} tries")

    def _fatal(self, code: int, why: str, n: int) -> str | None:
        """The one line that stops the run, for an error every request would hit."""
        s = self.spec
        where = f"the server at {s.where()}"
        most = re.search(r"At most (\d+) image", why)
        if most:
            return (
                f"{where} takes at most {most.group(1)} image(s) per prompt and a clip has {n} "
                f"({why}); start vLLM with --limit-mm-per-prompt '{{\"image\": {n}}}'"
            )
        if code in (400, 413, 422) and _CONTEXT.search(why):
            return (
                f"{where} has too short a context for {n} frames ({why}); start it with a "
                "longer one (vLLM: --max-model-len) or ask for fewer frames (-n)"
            )
        if code == 404 or re.search(r"does not exist|not served|pinned to", why):
            return s._not_served(why)
        if code in (401, 403):
            return f"{where} refused the API key ({why}): set --api-key or OPENAI_API_KEY"
        return None


BACKENDS.register("openai", OpenAIBackend)
