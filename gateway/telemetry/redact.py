"""Content that is recorded (only when a deployment turns it on) is first cleaned of secrets.

Whatever looks like a credential is replaced by `[REDACTED]`: the well-known key formats
(OpenAI and Anthropic `sk-…`, AWS access key ids, GitHub, Slack and Google keys, JWTs), bearer
tokens, `key=value` pairs whose name says secret, and any exact secret the gateway knows (its
upstream keys, the request's own key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"

_PATTERNS = re.compile(
    "|".join(
        (
            r"\bsk-[A-Za-z0-9_\-]{12,}",  # OpenAI, Anthropic (sk-ant-…), most OpenAI-compatible providers
            r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key id
            r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
            r"\bgithub_pat_[A-Za-z0-9_]{20,}",
            r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",  # Slack
            r"\bAIza[0-9A-Za-z_\-]{30,}",  # Google API keys
            r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
            r"\bbearer\s+[A-Za-z0-9._~+/\-]{8,}=*",
            r"\b(?:api[_-]?key|secret|password|passwd|token|authorization)\b[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?[^\s\"',;]{6,}",
        )
    ),
    re.IGNORECASE,
)


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()):
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str, extra: Iterable[str | None] = ()) -> str:
        for secret in (*self._secrets, *(e for e in extra if e and len(e) >= 4)):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _PATTERNS.sub(REDACTED, text)
