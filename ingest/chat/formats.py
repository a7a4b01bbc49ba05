"""What a format adapter gives back: messages to file, or an event to acknowledge and ignore."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from store.chat import ChatBatch


@dataclass(frozen=True)
class Ignored:
    event: str


@dataclass(frozen=True)
class SignatureHeaders:
    timestamp: str
    signature: str


class Parse(Protocol):
    """``parse(payload, source, received_at, trusted=...)``; raises pydantic's ValidationError
    for bad fields. ``trusted``: the source's word on who the customer is needs no proof."""

    def __call__(
        self, payload: Any, source: str, received_at: datetime, /, *, trusted: bool = False
    ) -> ChatBatch | Ignored: ...


@dataclass(frozen=True)
class ChatFormat:
    name: str
    headers: SignatureHeaders
    parse: Parse
