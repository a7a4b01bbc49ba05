"""The searchable text of chat attachments: only the attachments whose text is indexed are
handed to the extraction (in serve, copied to a parsing process)."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.attachment_text import with_attachment_text
from store.blobs import NewAttachment
from store.chat import ChatBatch, NewChatMessage
from store.documents import Author, AuthorRole, Direction, utcnow

PHOTO = NewAttachment(
    data=b"\x89PNG" + b"\0" * 1000, filename="photo.png", content_type="image/png"
)
LOG = NewAttachment(data=b"error E-5521", filename="boot.log", content_type="text/plain")


def message(n: int, *attachments: NewAttachment) -> NewChatMessage:
    return NewChatMessage(external_id=f"m{n}", author=Author(role=AuthorRole.CUSTOMER),
                          direction=Direction.INBOUND, text="see attached", sent_at=utcnow(),
                          attachments=attachments)  # fmt: skip


async def test_only_attachments_whose_text_is_indexed_go_to_the_extraction() -> None:
    handed: list[list[NewAttachment]] = []

    async def extract(attachments: Sequence[Sequence[NewAttachment]]) -> list[str]:
        handed.extend(list(each) for each in attachments)
        return [f"text {n}" for n in range(len(attachments))]

    batch = ChatBatch(source="widget", conversation_id="c", received_at=utcnow(),
                      messages=[message(0, PHOTO, LOG), message(1, PHOTO), message(2)])  # fmt: skip
    [done] = await with_attachment_text([batch], extract)
    assert handed == [[LOG]]  # the photo's bytes stay where they are
    assert [m.attachment_text for m in done.messages] == ["text 0", "", ""]
    assert done.messages[0].attachments == (PHOTO, LOG)  # all are filed all the same
