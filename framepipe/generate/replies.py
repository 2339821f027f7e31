"""What an OpenAI-compatible server sends back, read the same for every server: an
answer's text (a string, or a list of text parts), its token counts (None where the server
sent none: never a made-up zero), whether it stopped at the token limit, and an error's
message (OpenAI, vLLM, TGI or FastAPI shapes) as one line."""

from __future__ import annotations

import json
from typing import Any


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
    shapes), as one line."""
    text = raw.decode("utf-8", "replace")
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
