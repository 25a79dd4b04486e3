"""A deterministic scripted judge for the 127.0.0.1 test server (tests/support/openai_server.py).

The judged outputs carry markers that say what the judge answers, so a test knows every
judge number in advance:

* rubric — ``[[judge:pass]]`` / ``[[judge:fail]]`` in the judged output give that verdict
  (``{"verdict": ..., "reason": ...}``; on a scaled rubric the top score or 1);
  ``[[judge:score=N]]`` answers score N; ``[[judge:garbage]]`` answers prose without JSON
  (a judge error); ``[[judge:invalid]]`` answers ``{"verdict": "maybe"}`` (a judge error);
  ``[[judge:fenced]]`` wraps whatever the answer is in a code fence (still parseable);
  ``[[judge:http500]]`` makes the call itself fail with HTTP 500.
* pairwise — each output carries ``[[quality=N]]``; the judge prefers the higher quality
  (equal or missing: tie), whatever the order it is shown in. ``[[judge:first]]`` or
  ``[[judge:second]]`` anywhere in the request makes the judge pick that position
  regardless of quality (a position-biased judge: every pair becomes order-inconsistent).
  ``[[judge:garbage]]`` / ``[[judge:http500]]`` in either output work as for rubrics.

Prompts are recognised by the bundled templates' delimiters (``<reply>``,
``<response_a>``/``<response_b>``); any other request goes to ``fallback`` (by default the
server's own marker/echo behaviour), so one server can play both the judged model and
the judge. Model text cannot forge a delimiter: the prompt renderer neutralises them.

:func:`scripted_embedding` gives deterministic embeddings for ``similar`` checks (a hashed
bag of words), so cosine similarities are known exactly too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from tests.support.openai_server import Behaviour, Reply, default_behaviour, last_user_text

__all__ = [
    "judge_behaviour",
    "judge_reply",
    "marker",
    "quality",
    "scripted_embedding",
]

_MARK_RE = re.compile(r"\[\[judge:([a-z0-9=_-]+)\]\]")
_QUALITY_RE = re.compile(r"\[\[quality=(-?\d+)\]\]")
_REPLY_RE = re.compile(r"<reply>\n?(.*?)\n?</reply>", re.DOTALL)
_A_RE = re.compile(r"<response_a>\n?(.*?)\n?</response_a>", re.DOTALL)
_B_RE = re.compile(r"<response_b>\n?(.*?)\n?</response_b>", re.DOTALL)
_SCALE_RE = re.compile(r"from 1 \(.*?\) to (\d+)")


def marker(name: str) -> str:
    """The marker ``[[judge:NAME]]`` (``pass``, ``fail``, ``score=4``, ``garbage``...)."""
    return f"[[judge:{name}]]"


def quality(n: int) -> str:
    """The pairwise quality marker ``[[quality=N]]``."""
    return f"[[quality={n}]]"


def _marks(text: str) -> list[str]:
    return _MARK_RE.findall(text)


def _answer(obj: Mapping[str, Any], marks: list[str]) -> Reply:
    text = json.dumps(dict(obj))
    if "fenced" in marks:
        text = f"Here is my grading.\n```json\n{text}\n```"
    return Reply(content=text)


def _failure(marks: list[str]) -> Reply | None:
    if "http500" in marks:
        return Reply(status=500, error_message="scripted judge failure")
    if "garbage" in marks:
        return Reply(content="I think this answer is quite good overall.")
    if "invalid" in marks:
        return Reply(content='{"verdict": "maybe", "reason": "scripted invalid answer"}')
    return None


def _rubric(prompt: str, judged: str, default: str) -> Reply:
    marks = _marks(judged)
    failure = _failure(marks)
    if failure is not None:
        return failure
    scale_match = _SCALE_RE.search(prompt)
    scores = [int(m.split("=", 1)[1]) for m in marks if m.startswith("score=")]
    verdicts = [m for m in marks if m in ("pass", "fail")]
    verdict = verdicts[0] if verdicts else default
    if scale_match is not None:
        top = int(scale_match.group(1))
        score = scores[0] if scores else (top if verdict == "pass" else 1)
        return _answer({"score": score, "reason": f"scripted score {score}"}, marks)
    if scores:
        return _answer({"score": scores[0], "reason": "scripted score on a pass/fail rubric"}, marks)
    return _answer({"verdict": verdict, "reason": f"scripted {verdict}"}, marks)


def _quality(text: str) -> int | None:
    found = _QUALITY_RE.findall(text)
    return int(found[0]) if found else None


def _pairwise(prompt: str, a: str, b: str) -> Reply:
    marks = _marks(a) + _marks(b)
    failure = _failure(marks)
    if failure is not None:
        return failure
    request_marks = _marks(prompt)
    if "first" in request_marks:
        winner = "A"
    elif "second" in request_marks:
        winner = "B"
    else:
        qa, qb = _quality(a), _quality(b)
        winner = "tie" if qa is None or qb is None or qa == qb else ("A" if qa > qb else "B")
    return _answer({"winner": winner, "reason": f"scripted winner {winner}"}, marks)


def judge_reply(request_json: Mapping[str, Any], *, default: str = "fail") -> Reply | None:
    """The scripted judge's answer to one chat request; None when it is not a judge prompt."""
    prompt = last_user_text(request_json)
    a, b = _A_RE.search(prompt), _B_RE.search(prompt)
    if a is not None and b is not None:
        return _pairwise(prompt, a.group(1), b.group(1))
    reply = _REPLY_RE.search(prompt)
    if reply is not None:
        return _rubric(prompt, reply.group(1), default)
    return None


def judge_behaviour(*, default: str = "fail", fallback: Behaviour | None = None) -> Behaviour:
    """A server behaviour answering judge prompts by script and everything else by ``fallback``.

    Args:
        default: the rubric verdict when the judged output carries no marker.
        fallback: behaviour for requests that are not judge prompts (default: the server's
            marker/echo behaviour).
    """
    if default not in ("pass", "fail"):
        raise ValueError("default must be 'pass' or 'fail'")
    other = fallback or default_behaviour()

    def behave(request_json: dict[str, Any], request_number: int) -> Reply:
        reply = judge_reply(request_json, default=default)
        return reply if reply is not None else other(request_json, request_number)

    return behave


def scripted_embedding(text: str, *, dim: int = 16) -> list[float]:
    """A deterministic unit-length embedding: each lower-cased word hashed into one of ``dim`` buckets.

    Texts with the same words get similarity 1; texts sharing no word usually get a small
    similarity (bucket collisions aside). A text without words embeds as a fixed unit vector.
    """
    vector = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        bucket = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dim
        vector[bucket] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]
