"""An edited chat message keeps its earlier texts, bounded: however often and however large
the edits, the message stays a document MongoDB takes (16 MiB)."""

from __future__ import annotations

from datetime import timedelta

from bson import encode

from store.chat import ChatBatch, NewChatMessage, file_chat
from store.database import Database
from store.documents import MAX_BODY_BYTES, Author, AuthorRole, Direction, Message, utcnow

T0 = utcnow()


def batch(text: str, *, edits: bool, at: int = 0, html: str | None = None) -> ChatBatch:
    message = NewChatMessage(
        external_id="501", author=Author(role=AuthorRole.CUSTOMER), direction=Direction.INBOUND,
        text=text, html=html, sent_at=T0,
    )  # fmt: skip
    return ChatBatch(source="helpdesk", conversation_id="3", messages=[message], edits=edits,
                     received_at=T0 + timedelta(seconds=at))  # fmt: skip


def large(n: int) -> str:
    """A text of 2 MiB of UTF-8 in 4-byte characters, different for each ``n``."""
    return chr(0x1F600 + n) * (MAX_BODY_BYTES // 4)


async def only_message() -> Message:
    [message] = await Message.find_all().to_list()
    return message


async def test_many_large_edits_keep_the_message_under_mongodbs_document_limit(
    database: Database,
) -> None:
    await file_chat(batch(large(0), html=f"<p>{large(0)}</p>", edits=False))
    for n in range(1, 16):
        await file_chat(batch(large(n), html=f"<p>{large(n)}</p>", edits=True, at=n))
    message = await only_message()
    assert message.text == large(15)
    assert len(message.history) == 10 and message.history[0].text == large(0)[:65536]
    raw = await Message.get_pymongo_collection().find_one({"_id": message.id})
    assert raw is not None and len(encode(raw)) < 12 * 1024 * 1024


async def test_the_first_text_and_the_latest_ones_are_kept(database: Database) -> None:
    await file_chat(batch("version 0", edits=False))
    for n in range(1, 30):
        await file_chat(batch(f"version {n}", edits=True, at=n))
    message = await only_message()
    assert message.text == "version 29"
    kept = [v.text for v in message.history]
    assert kept == ["version 0", *(f"version {n}" for n in range(20, 29))]
    assert [v.replaced_at for v in message.history] == sorted(v.replaced_at for v in
                                                              message.history)  # fmt: skip


async def test_an_earlier_text_is_kept_cut_to_its_bound_in_bytes(database: Database) -> None:
    await file_chat(batch(large(0), html=large(1), edits=False))
    await file_chat(batch("short now", edits=True, at=1))
    [version] = (await only_message()).history
    for kept, whole in ((version.text, large(0)), (version.html, large(1))):
        assert kept is not None and whole.startswith(kept)
        assert 0 < len(kept.encode()) <= 256 * 1024


async def test_an_edit_whose_text_looks_like_an_operator_is_kept_as_written(
    database: Database,
) -> None:
    await file_chat(batch("$100 refund", edits=False))
    await file_chat(batch("$history", edits=True, at=1))
    message = await only_message()
    assert (message.text, [v.text for v in message.history]) == ("$history", ["$100 refund"])
