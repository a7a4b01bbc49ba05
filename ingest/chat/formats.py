"""What a format adapter gives back: messages to file, or an event to acknowledge and ignore."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from store.chat import ChatBatch


@dataclass(frozen=True)
class Ignored:
    event: str


@dataclass(frozen=True)
class SignatureHeaders:
    timestamp: str
    signature: str


@dataclass(frozen=True)
class ChatFormat:
    name: str
    headers: SignatureHeaders
    # parse(payload, source, received_at); raises pydantic's ValidationError for bad fields.
    parse: Callable[[Any, str, datetime], ChatBatch | Ignored]
