"""The ``openai`` backend: an OpenAI-compatible server answers (vLLM, SGLang, TGI,
``transformers serve``); the pipeline stays the same.

Each question about a clip is one chat request (:mod:`framepipe.generate.chat`): a user
message with the clip's frames as ``image_url`` parts (lossless PNG data URLs, encoded where
the clip was decoded) and then the question, so the server sees the pixels the in-process
backend would. ``max_new_tokens`` is
sent as ``max_tokens``; greedy decoding as ``temperature`` 0; sampling as ``temperature``,
``top_p`` and each answer's own ``seed`` (:func:`~framepipe.generate.config.answer_seed`: from
the run's seed, the clip and the question; clips never share a stream of draws); a
``finish_reason`` of ``length`` marks the answer truncated. ``top_k``, beams and a repetition
penalty have no OpenAI API equivalent: the server's own ``top_k`` applies, the others are refused.

Requests run ``max_concurrency`` at a time, on daemon threads (Ctrl-C stops at once), kept
in flight across clips (:meth:`OpenAIBackend.in_flight`: the next clip's request starts as
soon as one ends, not when a whole batch has). A connection error (a cut mid-answer too), a
429 or a 5xx is retried with exponential backoff (the server's ``Retry-After`` when it sends
one), at most ``retries`` times (a request the server holds past ``timeout_s``,
``--request-timeout``, once more only); a request that still fails makes its clip a failed
record with the server's message, and the run goes on. An error every request would hit
stops the run after the first one (:class:`~framepipe.errors.StopRunError`) with one line
that names the fix: a server that is down for ``wait_s`` (``--server-wait``): every
connection refused, or a gateway in front of it (a load balancer, an ingress) answering
502, 503 or 504 (:data:`~framepipe.generate.replies.GATEWAY`) to every request. Requests
that find it down wait for it, with backoff (the gateway's ``Retry-After`` when it sends
one), without failing their clips, until any request gets an answer; so a restart costs no
clip and a server gone for good stops a night's run instead of failing every clip left. A
gateway's error for a request after the server has answered others is that request's own
(a gateway timing out on it alone) and counts as a try. Also a server that takes fewer
images per prompt than a clip has (vLLM without ``--limit-mm-per-prompt``), a context too
short for n frames, a model the server does not serve, a refused API key. A server that
cannot be reached at start is a one-line error before any decoding. Records name the
backend, the base URL (never a key) and the server's model id; resume keys the backend and
the model. The API key never appears in a message, even where a server echoes it.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from framepipe.errors import (
    ConfigError,
    FramepipeError,
    GenerationError,
    ModelLoadError,
    StopRunError,
)
from framepipe.generate.backend import BACKENDS
from framepipe.generate.chat import APISettings, chat_messages, encode_images
from framepipe.generate.config import Answer, GenerationSettings, Request, as_settings
from framepipe.generate.inflight import Connections, InFlight
from framepipe.generate.replies import (
    GATEWAY,
    answer_text,
    cut_at_limit,
    error_message,
    fatal_error,
    not_served,
    token_count,
    unreachable,
)
from framepipe.generate.tiny import is_random
from framepipe.prompt import as_texts, user_body
from framepipe.utils import retry_after_s

log = logging.getLogger(__name__)


class OpenAIBackend:
    """Any OpenAI-compatible server at ``base_url`` (``http://host:8000/v1``).

    ``model``: the server's model id (None: the one model it serves). ``api_key``: default
    ``OPENAI_API_KEY``. ``settings``: as :class:`~framepipe.runs.caption.Pipeline` takes
    them (a dict of their fields, or a GenerationConfig). ``max_concurrency``: requests in
    flight at once, across clips (a run holds at most ``batch_size`` clips in flight, at
    least twice as many).
    ``retries``, ``backoff_s``: retries of a request after a connection error, 429 or 5xx,
    and the first wait (doubled each time, 30 s at most).
    ``wait_s``: how long a server that is down mid-run (every connection refused, or a
    gateway's 502, 503 or 504 to every request) is waited for before the run stops.
    Loaded, it is its own :class:`~framepipe.generate.backend.Backend`.
    """

    name = "openai"
    wants_gpu = False

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        settings: GenerationSettings | Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 600.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        wait_s: float = 300.0,
    ) -> None:
        url = urlsplit(base_url or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"--base-url {base_url!r} is not an http(s) URL")
        if url.username is not None or url.password is not None:  # urllib cannot send them
            raise ConfigError(
                f"--base-url {url.scheme}://{url.hostname}/...: holds a user or password, "
                "which is not sent; give the key with --api-key (or OPENAI_API_KEY)"
            )
        if max_concurrency < 1:
            raise ConfigError(f"--max-concurrency ({max_concurrency}) must be >= 1")
        if not timeout_s > 0:
            raise ConfigError(f"--request-timeout ({timeout_s}) must be > 0")
        if not wait_s >= 0:
            raise ConfigError(f"--server-wait ({wait_s:g}) must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        """The server's model id (found by :meth:`check` when not given)."""
        s = as_settings(settings) or GenerationSettings()  # also a dict or GenerationConfig
        batch = max(s.batch_size, 2 * max_concurrency)
        self.settings = APISettings(**{**dataclasses.asdict(s), "batch_size": batch})
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        """Read here, where the run starts: a cluster's actors get it with the backend."""
        self.max_concurrency = max_concurrency
        self.timeout_s, self.retries, self.backoff_s = timeout_s, max(0, retries), backoff_s
        self.wait_s = wait_s
        self._down_since: float | None = None
        """When the server was found down (None: it answers)."""
        self._answers = 0
        """The server's answers so far (any reply but a gateway's 502, 503 or 504)."""
        self.random = False
        """Whether the served model is a local folder marked as random weights."""
        self._checked = False
        self._stop: StopRunError | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        """Set when the caller stopped waiting (Ctrl-C): no new request, no retry."""
        self._connections = Connections()
        self._slots = threading.Semaphore(max_concurrency)
        """Requests in flight over every pool of this backend (:meth:`in_flight`)."""

    def __getstate__(self) -> dict[str, Any]:  # what travels to a cluster's actors
        gone = dict.fromkeys(("_stop", "_lock", "_cancel", "_down_since", "_connections", "_slots"))
        return {**self.__dict__, **gone}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _cancel=threading.Event())
        self._connections = Connections()
        self._slots = threading.Semaphore(self.max_concurrency)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBackend({self.where()!r}, model={self.model!r})"

    def where(self) -> str:
        """The base URL as records name it (no user or password)."""
        url = urlsplit(self.base_url)
        netloc = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname or ""
        netloc += f":{url.port}" if url.port else ""
        return urlunsplit((url.scheme, netloc, url.path, url.query, ""))

    # -- the spec: before loading --------------------------------------------------------------
    def check(self, n: int, questions: Iterable[Sequence[str]], system: str | None) -> None:
        """Reach the server and find the model (one-line errors before any decoding)."""
        for qs in questions:
            as_texts(list(qs))
        if self._checked:
            return
        try:
            data = self._request("/models", None, timeout=15)
        except urllib.error.HTTPError as exc:
            hint = ""
            if exc.code == 404 and not self.base_url.endswith("/v1"):
                root = self.where().split("/v1/", 1)[0].rstrip("/") + "/v1"
                hint = f": --base-url is the API root, e.g. --base-url {root}"
            raise ModelLoadError(
                f"the server at {self.where()} refused GET /models "
                f"({exc.code}: {self._redact(error_message(exc.read()))}){hint}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            why = self._redact(str(getattr(exc, "reason", None) or exc))
            raise ModelLoadError(
                f"cannot reach the server at {self.where()}{self._proxy()} ({why}): "
                + (
                    "start it, or fix --base-url"
                    if not self._proxy()
                    else "add its host to NO_PROXY, or fix the proxy or --base-url"
                )
            ) from None
        served = [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]
        if self.model is None and len(served) != 1:
            raise ConfigError(
                f"the server at {self.where()} serves {len(served)} models "
                f"({', '.join(served) or 'none'}): name one with --model"
            )
        self.model = self.model or served[0]
        if self.model not in served:
            raise ConfigError(not_served(self.where(), self.model, ", ".join(served) or "none"))
        self.random = is_random(self.model)
        self._checked = True

    def _proxy(self) -> str:
        """' through the proxy URL' where the environment sends requests to the server
        through one (its user and password left out), else ''."""
        url = urlsplit(self.base_url)
        proxy = urllib.request.getproxies().get(url.scheme)
        if not proxy or urllib.request.proxy_bypass(url.hostname or ""):
            return ""
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        port = f":{p.port}" if p.port else ""
        return f" through the proxy {p.scheme}://{p.hostname}{port}"

    def _redact(self, text: str) -> str:
        """``text`` (a server's message) without the API key, should the server echo it."""
        return text.replace(self.api_key, "[API key]") if self.api_key else text

    def key(self) -> dict[str, Any]:
        return {"backend": self.name, "id": self.model}

    def random_weights(self) -> bool:
        return self.random

    def prepare(self) -> Any:
        return encode_images

    def load(self) -> OpenAIBackend:
        if self._stop is not None:  # an earlier run stopped: the server may be fixed since
            self._stop, self._checked = None, False
        self._down_since = None
        self._cancel = threading.Event()  # an earlier run's requests, if any, stay stopped
        self._connections = Connections()
        self._slots = threading.Semaphore(self.max_concurrency)
        self.check(0, (), None)
        return self

    # -- the loaded backend ------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        s = {"backend": self.name, "base_url": self.where(), "id": self.model}
        return {**s, "random_weights": self.random}

    def answer_each(self, requests: Sequence[Request]) -> list[Answer | FramepipeError]:
        """One answer per request (its questions asked concurrently), or its clip's error;
        raises StopRunError for an error every request would hit."""
        pool = self.in_flight()
        out: list[Any] = [None] * len(requests)
        try:
            for i, r in enumerate(requests):
                pool.submit(i, r, len(r.questions))
            while pool.pending:
                for i, answer in pool.done(block=True):
                    out[i] = answer
        finally:
            pool.close()  # Ctrl-C: the requests of an interrupted call stop
        return out

    def in_flight(self) -> InFlight:
        """Requests kept in flight across clips, ``max_concurrency`` at a time (see
        :mod:`framepipe.generate.inflight`): ``submit(tag, request, len(questions))``, then
        ``done()`` hands back each clip's answer or error as its last request ends. Pools
        used at once (from threads: a Ray actor answering several batches) share the
        ``max_concurrency`` requests."""
        assert self._checked, "load() first"
        return InFlight(
            self._ask,
            self._answer_of,
            self.max_concurrency,
            self._cancel,
            lambda: self._stop,
            self._connections,
            self._slots,
        )

    def _answer_of(self, r: Request, mine: list[Any]) -> Answer | Exception:
        """The answer made of the results of ``r``'s questions (:meth:`_ask`), or the first
        error."""
        err = next((x for x in mine if isinstance(x, Exception)), None)
        if err is not None:
            return err
        counted = all(m[1] is not None and m[2] is not None for m in mine)  # every count sent
        texts = [user_body(len(r.images), [q], r.segments) for q in r.questions]
        return Answer(
            prompt=texts[0],
            answers=[m[0] for m in mine],
            generate_s=round(sum(m[3] for m in mine), 4),
            prompt_tokens=mine[0][1] if counted else None,
            new_tokens=[m[2] for m in mine] if counted else None,
            prompts=texts,
            truncated=[m[4] for m in mine],
        )

    def _ask(
        self, r: Request, k: int
    ) -> tuple[str, int | None, int | None, float, bool | None] | FramepipeError:
        """Question ``k`` of ``r``: (answer, prompt tokens, new tokens, seconds, whether it
        stopped at ``max_tokens``; what the server did not send is None), or the error."""
        messages, n = chat_messages(r, k)
        body = {"model": self.model, "messages": messages, **self.settings.body(r, k)}
        t0 = time.perf_counter()
        data: Any = None
        try:
            data = self._post(body, n)
            choice = data["choices"][0]
            text = answer_text(choice["message"]["content"])
        except FramepipeError as exc:
            return exc
        except (KeyError, IndexError, TypeError):
            text = None
        if text is None:
            sent = self._redact(f"{data!s:.200}")
            return GenerationError(f"the server at {self.where()} sent no answer: {sent}")
        usage = data.get("usage")
        tokens = token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")
        return text.strip(), *tokens, time.perf_counter() - t0, cut_at_limit(choice)

    def _request(self, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        """GET (no ``body``) or POST ``path`` under the base URL; the JSON answer."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data, headers)
        # an opener per request: the proxy settings of the environment now (urlopen's are
        # those of its first call); its connection shut if the request is cancelled
        with self._connections.opener().open(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        return out if isinstance(out, dict) else {}

    def _post(self, body: dict[str, Any], n: int) -> dict[str, Any]:
        """POST /chat/completions, retried with backoff on connection errors, 429 and 5xx;
        a request with no answer within ``timeout_s`` is tried once more only (a server that
        holds it once will likely hold it again: ``retries`` times would hold the clip for
        ``retries + 1`` timeouts). A server that is down (nothing listens, or a gateway in
        front of it answers 502, 503 or 504) is waited for (:meth:`_down`) without counting
        tries, until it has answered another request since: then the error is this
        request's own (a gateway timing out on it alone) and counts."""
        why = ""
        timed_out = False
        attempt = down = 0
        mark: int | None = None  # the server's answers when this request first found it down
        while True:
            if self._stop is not None:
                raise self._stop
            if self._cancel.is_set():
                raise GenerationError(f"the request to {self.where()} was stopped")
            wait = min(30.0, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
            after = None
            gone: str | None = None  # what says the server is down
            try:
                out = self._request("/chat/completions", body, timeout=self.timeout_s)
                self._answered()
                return out
            except urllib.error.HTTPError as exc:
                why = f"{exc.code}: {self._redact(error_message(exc.read()) or exc.reason)}"
                after = retry_after_s(exc.headers)
                if exc.code in GATEWAY:  # a gateway with no server behind it
                    gone = f"answered {exc.code} to every request"
                else:
                    self._answered()
                    fatal = fatal_error(self.where(), self.model, exc.code, why, n)
                    if fatal is not None:
                        with self._lock:
                            self._stop = self._stop or StopRunError(fatal)
                        raise self._stop from None
                    if exc.code != 429 and exc.code < 500:
                        raise GenerationError(
                            f"the server at {self.where()} refused ({why})"
                        ) from None
            except (OSError, ValueError, http.client.HTTPException) as exc:
                # refused, reset (also mid-answer), timed out, not JSON
                reason = getattr(exc, "reason", None) or exc
                why = self._redact(str(reason) or type(exc).__name__)
                if unreachable(reason):  # nothing listens
                    gone = "refused every connection"
                elif isinstance(reason, TimeoutError):  # tried once more, not `retries` times
                    if timed_out:
                        raise GenerationError(
                            f"the server at {self.where()} sent no answer within "
                            f"{self.timeout_s:g} s, twice (--request-timeout)"
                        ) from None
                    timed_out = True
            if gone is not None and (mark is None or mark == self._answers):
                mark = self._answers if mark is None else mark
                left = self._down(why, gone)
                pause = min(30.0, self.backoff_s * 2**down) * random.uniform(0.5, 1.0)
                pause = min(after if after is not None else pause, left)
                log.debug("%s: %s; trying again in %.1f s", self.where(), why, pause)
                self._cancel.wait(pause)
                down += 1
                continue
            if attempt >= self.retries:
                break
            wait = min(60.0, after) if after is not None else wait
            log.debug("%s: %s; retrying in %.1f s", self.where(), why, wait)
            self._cancel.wait(wait)
            attempt += 1
        tries = self.retries + 1
        raise GenerationError(f"the server at {self.where()} failed ({why}) after {tries} tries")

    def _answered(self) -> None:
        """The server answered a request: it is up."""
        with self._lock:
            self._down_since = None
            self._answers += 1

    def _down(self, why: str, gone: str) -> float:
        """A request found the server down (``why``; ``gone`` says so of every request,
        e.g. ``refused every connection``): the seconds left to wait for it, or the
        StopRunError once it has answered no request for ``wait_s``."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                log.warning("the server at %s is down (%s): waiting for it", self.where(), why)
            left = self._down_since + self.wait_s - now
            if left <= 0:
                self._stop = self._stop or StopRunError(
                    f"the server at {self.where()} {gone} for {self.wait_s:g} s ({why}): start "
                    "it again and run the same command to answer the clips left (the answered "
                    "ones are kept; --server-wait to wait longer)"
                )
                raise self._stop
        return left


BACKENDS.register("openai", OpenAIBackend)
