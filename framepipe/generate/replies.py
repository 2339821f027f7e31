"""What an OpenAI-compatible server sends back, read the same for every server: an
answer's text (a string, or a list of text parts), its token counts (None where the server
sent none: never a made-up zero), whether it stopped at the token limit, and an error's
message (OpenAI, vLLM, TGI or FastAPI shapes, or a proxy's HTML page) as one line."""

from __future__ import annotations

import errno
import json
import re
import socket
from typing import Any

GATEWAY = frozenset({502, 503, 504})
"""What a proxy, load balancer or Kubernetes ingress in front of the server answers while
no server is behind it (dead, restarting, not ready yet): the server is down, the request
is not bad. 500 is not one: a server answers it to one request that broke it."""

_CONTEXT = re.compile(
    r"context length|max_model_len|max-model-len|maximum model length|takes at most \d+"
    r"|max_new_tokens`? must be <=",
    re.IGNORECASE,
)
"""What vLLM, SGLang, TGI and transformers serve say of a prompt longer than their context."""


def answer_text(content: Any) -> str | None:
    """An answer's text: a string (an empty one is the model's own empty answer), or a list
    of text parts (joined); None for any other shape and for no content (``null``: a
    refusal, a tool call, a reasoning model that spent ``max_tokens`` thinking), which is
    no answer."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    return None


def token_count(usage: Any, name: str) -> int | None:
    """A token count of the answer's ``usage`` (None where the server sent none)."""
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cut_at_limit(choice: Any) -> bool | None:
    """Whether a chat completion ``choice`` stopped at ``max_tokens`` (its ``finish_reason``
    is ``length``); None where the server sent no reason."""
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    return reason == "length" if isinstance(reason, str) else None


def error_message(raw: bytes) -> str:
    """The server's error message in its response body (OpenAI, vLLM, TGI or FastAPI
    shapes; a proxy's HTML page: its title), as one line."""
    text = raw.decode("utf-8", "replace")
    title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title or text.lstrip().startswith("<"):
        text = title.group(1) if title else re.sub(r"<[^>]*>", " ", text)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        found = (err.get("message") if isinstance(err, dict) else err) or body.get("message")
        found = found or body.get("detail")
        if found:
            text = found if isinstance(found, str) else json.dumps(found)
    return " ".join(text.split())[:300]


def unreachable(reason: object) -> bool:
    """Whether a connection error means nothing listens at the server's address (refused,
    no route, the host name gone), not a request that went wrong."""
    gone = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
    return isinstance(reason, socket.gaierror) or (
        isinstance(reason, OSError) and reason.errno in gone
    )


def not_served(where: str, model: str | None, detail: str) -> str:
    """The one line for a model the server at ``where`` does not serve."""
    return (
        f"the server at {where} does not serve model {model!r} ({detail}); "
        "name one it serves with --model"
    )


def fatal_error(where: str, model: str | None, code: int, why: str, n: int) -> str | None:
    """The one line that stops the run, for an error (status ``code``, message ``why``)
    every request with ``n`` images to the server at ``where`` would hit; None for others."""
    server = f"the server at {where}"
    most = re.search(r"At most (\d+) image", why)
    if most:
        return (
            f"{server} takes at most {most.group(1)} image(s) per prompt and a clip has {n} "
            f"({why}); start vLLM with --limit-mm-per-prompt '{{\"image\": {n}}}'"
        )
    if code in (400, 413, 422) and _CONTEXT.search(why):
        return (
            f"{server} has too short a context for {n} frames ({why}); start it with a "
            "longer one (vLLM: --max-model-len) or ask for fewer frames (-n)"
        )
    if code == 404 or re.search(r"does not exist|not served|pinned to", why):
        return not_served(where, model, why)
    if code in (401, 403):
        return f"{server} refused the API key ({why}): set --api-key or OPENAI_API_KEY"
    return None
