"""Retention as invariants: a hypothesis state machine drives the real store (a real mongod, the
real ingest, sweep and housekeeping) through random interleavings of mail, chat, accounts,
deletions, erasures, restores, holds, exports (some failing), housekeeping and time, and checks
after every step that:

- nothing under an active hold was deleted;
- nothing past its deadline survives a sweep unless held, as the residue scan sees it: not the
  message, nor its conversation, raw copy or attachments, nor an export file;
- every acknowledged message is stored exactly once, or was due and is named by a purge record;
- agents never see a deleted account's content.

The model knows only what a user of the product knows (who registered, deleted, erased,
restored or held what, and when); deadlines are the contract's, not read from the store.
``ARCHIVE_STATEFUL_EXAMPLES`` (default 12, of up to 40 steps each) runs it longer.
"""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from beanie import PydanticObjectId
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from exports.builder import (
    Scope,
    build_export,
    files_of_exports,
    register_disclosure,
    scope_of_hold,
    start_export,
)
from ingest.mime import parse_email
from retention.forecast import forecast
from retention.holds import place_hold, release_hold
from retention.residue import Identifiers, Verdict, scan
from retention.rules import RetentionPolicy, subject_hmac
from retention.sweep import sweep
from scheduler.jobs import Jobs
from search.engine import Filters, Order, parse_query, search
from search.index import SearchIndex, deleted_documents, following
from store.accounts import (
    erase_person,
    mark_deleted,
    register_account,
    request_erasure,
    restore,
)
from store.blobs import read_blob
from store.chat import ChatBatch, NewChatMessage, file_chat
from store.database import Database, open_database
from store.documents import (
    Account,
    AccountStatus,
    Author,
    AuthorRole,
    Conversation,
    Direction,
    Export,
    ExportStatus,
    Hold,
    HoldKind,
    Message,
    PurgeRecord,
    active_holds_query,
    utcnow,
)
from store.embedded import EmbeddedMongo
from store.errors import Conflict, NotFound
from store.messages import file_email
from tests.conftest import report
from tests.factories import SUPPORT, chat, email

T = TypeVar("T")

GRACE = timedelta(days=30)
MAX_AGE = timedelta(days=400)
INTERVAL = timedelta(minutes=10)
ACCOUNTS = ["acct-a", "acct-b", "acct-c"]
EXAMPLES = int(os.environ.get("ARCHIVE_STATEFUL_EXAMPLES", "12"))
# Shrinking a failure on a real database can take many minutes; 0 reports it unshrunk.
SHRINK = os.environ.get("ARCHIVE_STATEFUL_SHRINK", "1") != "0"
STEPS: list[int] = []  # one per step run, over all examples


def address(account_id: str) -> str:
    return f"{account_id}@example.com"


@dataclass
class Life:
    """One life of an account in the model: what the platform and compliance did to it."""

    registered: bool = False  # the platform gave it its address and name (else: named by id)
    address: str | None = None  # when not address(account): a person erased by address
    due: datetime | None = None  # its deletion deadline (None: not deleted)
    due_step: int = 0  # the step that set it: only a later sweep must honour it
    purged_at: datetime | None = None  # when a sweep was seen to finish it


@dataclass
class Acked:
    """An acknowledged message, as the model saw it after the step that stored it."""

    id: PydanticObjectId
    dedup_key: str
    conversation_id: PydanticObjectId
    collected_at: datetime
    blobs: tuple[str, ...] = ()  # its raw copy and attachments
    account_id: str | None = None
    life: int = 0  # index of the account's life it was linked in
    step: int = 0  # the step it was stored or linked in
    gone: bool = False
    # A hold kept it at the last sweep: it is due again only at a sweep after the hold ends.
    held_at_sweep: bool = False


@dataclass
class Model:
    now: datetime
    lives: dict[str, list[Life]] = field(default_factory=dict)
    messages: dict[PydanticObjectId, Acked] = field(default_factory=dict)
    last_sweep: datetime | None = None
    last_sweep_step: int = -1
    step: int = 0
    holds: list[PydanticObjectId] = field(default_factory=list)


class RetentionMachine(RuleBasedStateMachine):
    def __init__(self, loop: asyncio.Runner, uri: str, data_dir: Path) -> None:
        super().__init__()
        self.loop = loop
        self.stack = AsyncExitStack()
        self.name = f"machine_{uuid.uuid4().hex[:10]}"
        self.database: Database = self.run(
            self.stack.enter_async_context(open_database(uri, name=self.name))
        )
        self.data_dir = data_dir
        self.policy = RetentionPolicy(
            grace=GRACE, max_age=MAX_AGE, secret_key=b"m" * 32, batch_size=3,
            # Groups of two accounts: batches span accounts, and a sweep has several groups.
            account_group=2, blob_quiet_period=timedelta(0), data_dir=data_dir,
        )  # fmt: skip
        self.model = Model(now=utcnow())
        # The search index, where the residue scan looks for it (ARCHIVE_DATA_DIR/search).
        self.index = self.run(self.stack.enter_async_context(
            following(SearchIndex(data_dir / "search", self.name, await_ms=10))))  # fmt: skip
        self.jobs = Jobs(database=self.database, policy=self.policy, interval=INTERVAL,
                         clock=lambda: self.model.now, index=self.index)  # fmt: skip

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run(work)  # type: ignore[arg-type]

    def set_due(self, life: Life, due: datetime) -> None:
        life.due, life.due_step = due, self.model.step

    def teardown(self) -> None:
        async def close() -> None:
            await self.database.client.drop_database(self.name)
            await self.stack.aclose()

        self.run(close())

    # --- accounts -------------------------------------------------------------------------

    @rule(account=st.sampled_from(ACCOUNTS))
    def register(self, account: str) -> None:
        """The platform registers the account (again: a purged one starts a new life)."""
        lives = self.model.lives.setdefault(account, [])
        if not lives or lives[-1].purged_at is not None:
            lives.append(Life())
        lives[-1].registered = True
        self.run(register_account(account_id=account, emails=[address(account)], name=account))
        self.observe_links()

    @precondition(lambda self: self.model.lives)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(sorted(self.model.lives)))
        life = self.model.lives[account][-1]
        self.run(mark_deleted(account_id=account, deleted_at=self.model.now, grace=GRACE))
        if life.due is None and life.purged_at is None:
            self.set_due(life, self.model.now + GRACE)

    @precondition(lambda self: self.model.lives)
    @rule(data=st.data())
    def erase(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(sorted(self.model.lives)))
        life = self.model.lives[account][-1]
        self.run(request_erasure(account_id=account, now=self.model.now))
        self.set_due(life, self.model.now)
        life.purged_at = None  # whatever linked since is due again

    @rule(who=st.sampled_from([*ACCOUNTS, "stranger"]))
    def erase_by_address(self, who: str) -> None:
        """An erasure of a person by address: every account that has or had it is erased
        again, and the address's unlinked content goes under an account of its own."""
        erasure = self.run(erase_person(emails=[address(who)], names=[], now=self.model.now))
        for account in erasure.accounts:
            lives = self.model.lives.setdefault(account, [Life()])
            self.set_due(lives[-1], self.model.now)
            lives[-1].purged_at = None
        lives = self.model.lives.setdefault(erasure.person, [])
        if not lives or lives[-1].purged_at is not None:
            lives.append(Life(registered=True, address=address(who)))
        self.set_due(lives[-1], self.model.now)
        lives[-1].purged_at = None
        self.observe_links()

    @precondition(lambda self: self.model.lives)
    @rule(data=st.data())
    def restore(self, data: st.DataObject) -> None:
        account = data.draw(st.sampled_from(sorted(self.model.lives)))
        life = self.model.lives[account][-1]
        try:
            self.run(restore(account_id=account))
        except NotFound:
            assert life.purged_at is not None or self.is_tombstone(account)
            return
        except Conflict:
            assert account.startswith("person-")  # an erasure by address is not undone
            return
        life.due = None

    def is_tombstone(self, account: str) -> bool:
        found = self.run(Account.get(account))
        return found is not None and found.purged_at is not None

    # --- ingest ---------------------------------------------------------------------------

    @rule(sender=st.sampled_from([*ACCOUNTS, "stranger"]), named=st.booleans(),
          attached=st.sampled_from(["none", "own", "common"]))  # fmt: skip
    def mail_in(self, sender: str, named: bool, attached: str) -> None:
        """Mail from a customer (linked by address), or imported for an account (named), with
        no attachment, one of its own, or one whose bytes other mails carry too."""
        account = sender if named and sender != "stranger" else None
        data = {"own": f"invoice {uuid.uuid4().hex}".encode(), "common": b"terms of sale"}
        attachments = [] if attached == "none" else [("a.txt", "text/plain", data[attached])]
        message = self.run(email(account_id=account, sender=address(sender),
                                 message_id=f"<{uuid.uuid4().hex}@example.com>",
                                 attachments=attachments))  # fmt: skip
        self.acknowledge(message)

    @precondition(lambda self: self.model.messages)
    @rule(data=st.data())
    def reply(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(sorted(self.model.messages)))
        found = self.run(Message.get(parent))
        if found is None or found.message_id_header is None:
            return
        parent_id = f"<{found.message_id_header}>"
        message = self.run(email(sender="agent@shop.example", in_reply_to=parent_id,
                                 message_id=f"<{uuid.uuid4().hex}@shop.example>"))  # fmt: skip
        self.acknowledge(message)

    @precondition(lambda self: self.model.messages)
    @rule(data=st.data())
    def retransmission(self, data: st.DataObject) -> None:
        """The same delivery again: acknowledged with the stored message, stored once."""
        original = data.draw(st.sampled_from(sorted(self.model.messages)))
        found = self.run(Message.get(original))
        if found is None or found.raw is None or found.channel.value != "email":
            return
        raw = self.run(read_blob(found.raw.sha256))
        filed = self.run(file_email(parse_email(raw, support=SUPPORT, received_at=utcnow())))
        assert filed.message_id == original and filed.duplicate

    @rule(account=st.sampled_from([*ACCOUNTS, None]), by_email=st.booleans())
    def chat_in(self, account: str | None, by_email: bool) -> None:
        conversation = f"chat-{uuid.uuid4().hex[:6]}"
        if account is not None and by_email:
            message = self.run(_chat_from(address(account), conversation))
        else:
            message = self.run(chat("hello", account_id=account, conversation=conversation))
        self.acknowledge(message)

    def acknowledge(self, message: Message) -> None:
        assert message.id is not None
        blobs = [a.sha256 for a in message.attachments]
        if message.raw is not None:
            blobs.append(message.raw.sha256)
        self.model.messages[message.id] = Acked(
            message.id,
            message.dedup_key,
            message.conversation_id,
            message.collected_at,
            blobs=tuple(blobs),
            step=self.model.step,
        )
        self.observe_links()

    def observe_links(self) -> None:
        """Which account each stored message is linked to, and in which of its lives."""
        for acked in self.model.messages.values():
            if acked.gone or acked.account_id is not None:
                continue
            stored = self.run(Message.get(acked.id))
            if stored is not None and stored.account_id is not None:
                lives = self.model.lives.setdefault(stored.account_id, [Life()])
                acked.account_id, acked.life = stored.account_id, len(lives) - 1
                acked.step = self.model.step

    # --- holds ----------------------------------------------------------------------------

    @rule(data=st.data(), on_account=st.booleans(), expires=st.booleans())
    def place(self, data: st.DataObject, on_account: bool, expires: bool) -> None:
        expires_at = self.model.now + timedelta(days=10) if expires else None
        kind = {"kind": HoldKind.DISPUTE, "reason": "dispute", "case_ref": None,
                "expires_at": expires_at, "created_by": "legal"}  # fmt: skip
        if on_account:
            target = data.draw(st.sampled_from(ACCOUNTS))
            if self.run(Account.get(target)) is None:
                return
            hold = self.run(place_hold(self.database, account_id=target, conversation_id=None,
                                       **kind))  # fmt: skip
        else:
            alive = [m for m in self.model.messages.values() if not m.gone]
            if not alive:
                return
            target_message = data.draw(st.sampled_from(alive))
            try:
                hold = self.run(place_hold(self.database, account_id=None,
                                           conversation_id=target_message.conversation_id,
                                           **kind))  # fmt: skip
            except NotFound:
                return  # the conversation was purged a moment ago
        assert hold.id is not None
        self.model.holds.append(hold.id)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(self.model.holds))
        self.model.holds.remove(hold_id)
        self.run(release_hold(hold_id=hold_id, released_by="legal", reason=None,
                              now=self.model.now))  # fmt: skip

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def disclose(self, data: st.DataObject) -> None:
        """A hold's scope handed to an authority: the export belongs to whose data it holds,
        and goes with the first of them to be purged (the invariant below)."""
        hold_id = data.draw(st.sampled_from(self.model.holds))
        hold, scope = self.run(scope_of_hold(hold_id))
        if scope.account_id is not None and self.is_tombstone(scope.account_id):
            return
        try:
            record = self.run(start_export(scope=scope, account_id=None, hold_id=hold_id,
                                           created_by="compliance", now=self.model.now,
                                           max_age=timedelta(days=7)))  # fmt: skip
        except NotFound:  # its conversation was purged (the hold had ended): refused
            assert scope.conversation_id is not None
            assert self.run(Conversation.get(scope.conversation_id)) is None
            return
        self.run(build_export(record, scope, directory=self.data_dir / "exports",
                              now=self.model.now))  # fmt: skip
        self.run(register_disclosure(export=record, hold=hold, authority="court",
                                     legal_basis="order", disclosed_by="legal",
                                     now=self.model.now))  # fmt: skip

    # --- time, exports, sweeps ------------------------------------------------------------

    @rule(by=st.sampled_from([INTERVAL, timedelta(days=1), timedelta(days=11), GRACE, MAX_AGE]))
    def advance(self, by: timedelta) -> None:
        self.model.now += by

    @precondition(lambda self: self.model.lives)
    @rule(data=st.data(), fails=st.booleans())
    def export(self, data: st.DataObject, fails: bool) -> None:
        """A subject access export; one that fails (the disk fills up while it writes its
        first message) leaves no file behind, temporary ones included."""
        account = data.draw(st.sampled_from(sorted(self.model.lives)))
        scope = Scope(account_id=account)
        try:
            record = self.run(start_export(
                scope=scope, account_id=account, hold_id=None, created_by="compliance",
                now=self.model.now, max_age=timedelta(days=7),
            ))  # fmt: skip
        except Conflict:
            assert self.is_tombstone(account)
            return
        directory = self.data_dir / "exports"
        on_message = _disk_full if fails else lambda: None
        try:
            self.run(build_export(record, scope, directory=directory, now=self.model.now,
                                          on_message=on_message))  # fmt: skip
        except OSError:
            assert record.id is not None
            stored = self.run(Export.get(record.id))
            assert stored is not None and stored.status is ExportStatus.FAILED
            left = files_of_exports(directory=directory, export_ids=[record.id])
            assert left == [], f"a failed export left {[p.name for p in left]}"

    @rule()
    def sweep(self) -> None:
        self.run(sweep(self.database, now=self.model.now, policy=self.policy,
                       index_synced=self.index.sync))  # fmt: skip
        self.model.last_sweep, self.model.last_sweep_step = self.model.now, self.model.step
        for account, lives in self.model.lives.items():
            found = self.run(Account.get(account))
            finished = found is not None and found.purged_at is not None
            if finished and lives[-1].due is not None and lives[-1].purged_at is None:
                lives[-1].purged_at = self.model.now
        self.check_purged_accounts()
        for acked in self.model.messages.values():
            if not acked.gone:
                acked.held_at_sweep = self.held(acked, self.run(Message.get(acked.id)))

    @rule()
    def housekeeping(self) -> None:
        """The scheduler's own job: orphan blobs, expired exports, export files no record owns,
        audit mentions."""
        self.run(self.jobs.housekeeping())
        # Deleted documents are gone from the search index's files, not only from its results.
        assert deleted_documents(self.index.path) == 0

    # --- the promises ---------------------------------------------------------------------

    def deadline(self, acked: Acked) -> datetime:
        """When the contract says this message must be gone."""
        deadlines = [acked.collected_at + MAX_AGE]
        if acked.account_id is not None:
            lives = self.model.lives[acked.account_id]
            life = lives[acked.life] if acked.life < len(lives) else lives[-1]
            if life.due is not None:
                deadlines.append(life.due)
        return min(deadlines)

    def overdue(self, acked: Acked) -> bool:
        """A sweep has run since its deadline passed (and since it was decided)."""
        if self.model.last_sweep is None or self.deadline(acked) > self.model.last_sweep:
            return False
        if acked.held_at_sweep:
            return False
        decided = acked.step
        if acked.account_id is not None:
            lives = self.model.lives[acked.account_id]
            life = lives[acked.life] if acked.life < len(lives) else lives[-1]
            decided = max(decided, life.due_step)
        return self.model.last_sweep_step > decided

    def held(self, acked: Acked, stored: Message | None) -> bool:
        account = stored.account_id if stored is not None else acked.account_id
        scope: list[dict[str, Any]] = [{"conversation_id": acked.conversation_id}]
        if account:
            scope.append({"account_id": account})
        query = {"$and": [{"$or": scope}, active_holds_query(self.model.now)]}
        return self.run(Hold.find(query).count()) > 0

    @invariant()
    def nothing_held_was_deleted_and_nothing_acknowledged_lost(self) -> None:
        for acked in self.model.messages.values():
            if acked.gone:
                continue
            stored = self.run(Message.find({"dedup_key": acked.dedup_key}).to_list())
            assert len(stored) <= 1, f"{acked.dedup_key} stored {len(stored)} times"
            if stored:
                continue
            acked.gone = True
            assert not self.held(acked, None), f"held message {acked.id} was deleted"
            assert self.model.last_sweep is not None
            due = self.deadline(acked)
            assert due <= self.model.last_sweep, f"message {acked.id} deleted before its deadline"
            assert self.run(self.named_by_a_record(acked)), f"no purge record names {acked.id}"

    async def named_by_a_record(self, acked: Acked) -> bool:
        if acked.account_id is not None:
            subject = subject_hmac(self.policy.secret_key, acked.account_id)
            if await PurgeRecord.find({"subjects": subject}).count():
                return True
        return await PurgeRecord.find({"rule": "max_age"}).count() > 0

    def scan_clock(self) -> datetime:
        """The scans' clock: the model's, but never behind the real one, which stamps when a
        blob was last referenced (else a blob the sweep forgot would look quiet, not left)."""
        return max(self.model.now, utcnow())

    @invariant()
    def nothing_past_its_deadline_survives_a_sweep_unless_held(self) -> None:
        """Of every message a sweep deleted, and every one it should have: not the message,
        its conversation (unless something that stays keeps it), raw copy or attachments
        (unless shared with mail that stays)."""
        if self.model.last_sweep is None:
            return
        overdue = Identifiers()
        overdue.add(m for m in self.model.messages.values() if m.gone or self.overdue(m))
        residue = self.run(scan(overdue, now=self.scan_clock(), quiet_period=timedelta(0),
                                data_dir=self.data_dir))  # fmt: skip
        assert residue.verdict is not Verdict.REMAINS, residue.lines()

    def check_purged_accounts(self) -> None:
        """Right after a sweep, the residue scan of every purged account (by its id, address
        and name, as the product's own verify-purge runs it) finds nothing unexplained."""
        for account, lives in self.model.lives.items():
            if lives[-1].purged_at is not None:
                known = lives[-1].registered  # an account made by a chat naming it has no address
                mail = lives[-1].address or address(account)
                identifiers = Identifiers(account_id=account,
                                          emails={mail} if known else set(),
                                          names={account} if known and not lives[-1].address
                                          else set())  # fmt: skip
                life = len(lives) - 1
                identifiers.add(m for m in self.model.messages.values()
                                if m.account_id == account and m.life == life)  # fmt: skip
                residue = self.run(scan(identifiers, now=self.scan_clock(),
                                        quiet_period=timedelta(0), data_dir=self.data_dir,
                                        captured_at=lives[-1].purged_at))  # fmt: skip
                assert residue.verdict is not Verdict.REMAINS, (account, residue.lines())
                # "clean" on its certificate: nothing of it anywhere, nothing pending.
                # The last closed (a purge that found nothing more to delete takes up its
                # record again: it may have started before a later one).
                record = self.run(PurgeRecord.find(
                    {"subjects": subject_hmac(self.policy.secret_key, account)}
                ).sort("-done_at").first_or_none())  # fmt: skip
                said = record.residue if record is not None else None
                if said is not None and said.get("verdict") == Verdict.CLEAN.value:
                    assert residue.verdict is Verdict.CLEAN, (account, residue.lines())

    @invariant()
    def every_stored_message_is_in_exactly_one_row_of_the_forecast(self) -> None:
        """The forecast gives every message a date: a deleted account's row, or the month its
        maximum age ends in; no row holds more held messages than it has."""
        items = self.run(forecast(now=self.model.now, policy=self.policy))
        assert sum(i.messages for i in items) == self.run(Message.count()), items
        assert all(0 <= i.held_messages <= i.messages for i in items), items
        under_deadline = {"purge_due_at": {"$type": "date"}}
        assert sum(i.messages for i in items if i.account_id) == self.run(
            Message.find(under_deadline).count())  # fmt: skip

    @invariant()
    def no_export_outlives_a_subject_it_holds(self) -> None:
        """An export (subject access or disclosure) goes with the first of its accounts or
        conversations to be purged."""
        for export in self.run(Export.find_all().to_list()):
            for account_id in export.account_ids:
                account = self.run(Account.get(account_id))
                purged = account.purged_at if account is not None else None
                assert purged is None or purged <= export.created_at, (export.id, account_id)
            if export.conversation_ids:
                there = self.run(Conversation.find(
                    {"_id": {"$in": export.conversation_ids}}).count())  # fmt: skip
                assert there == len(export.conversation_ids), f"export {export.id} outlived one"

    @invariant()
    def count_steps(self) -> None:
        """Invariants run once after each rule: the model's step counter (and the run's)."""
        self.model.step += 1
        STEPS.append(1)

    @invariant()
    def agents_never_see_a_deleted_accounts_content(self) -> None:
        for account in self.model.lives:
            found = self.run(Account.get(account))
            if found is not None and found.status is AccountStatus.DELETED:
                visible = {"account_id": account, "restricted": False}
                assert self.run(Message.find(visible).count()) == 0, account
                assert self.run(self.searched_as_agent(account)) == [], account

    async def searched_as_agent(self, account: str) -> list[str]:
        """What an agent's search finds of the account, asked as plainly as can be."""
        await self.index.sync()
        found = []
        for q in (f"account:{account}", "hi", ""):
            results = await search(index=self.index, query=parse_query(q), order=Order.NEWEST,
                                   filters=Filters(account_id=account, hide_restricted=True),
                                   limit=50, after=None)  # fmt: skip
            found += [str(h.message.id) for h in results.hits]
        return found


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def _chat_from(customer: str, conversation: str) -> Message:
    """A chat whose customer is known only by email (the webhook names no account)."""
    filed = await file_chat(ChatBatch(
        source="widget", conversation_id=conversation, received_at=utcnow(),
        customer_email=customer,
        messages=[NewChatMessage(external_id=uuid.uuid4().hex,
                                 author=Author(role=AuthorRole.CUSTOMER, email=customer),
                                 direction=Direction.INBOUND, text="hi", sent_at=utcnow())],
    ))  # fmt: skip
    message = await Message.get(filed.messages[0].id)
    assert message is not None
    return message


def test_retention_keeps_every_promise_whatever_happens(
    mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    """At least 200 steps in ``make test`` (12 examples of up to 40 steps, each example on a
    fresh database); set ARCHIVE_STATEFUL_EXAMPLES for a longer search."""
    STEPS.clear()
    # A loop of its own (hypothesis calls rules synchronously), not installed as the thread's
    # current loop: the session's loop stays the tests' loop.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as loop:
        examples = iter(range(10**6))
        run_state_machine_as_test(
            lambda: RetentionMachine(loop, mongo.uri, tmp_path / f"data-{next(examples)}"),
            settings=settings(
                max_examples=EXAMPLES, stateful_step_count=40, deadline=None, database=None,
                suppress_health_check=list(HealthCheck),
                phases=[p for p in Phase if p is not Phase.shrink or SHRINK],
            ),
        )  # fmt: skip
    steps = len(STEPS) - EXAMPLES  # the invariants also run once before the first step
    report(f"retention state machine: {EXAMPLES} examples, {steps} steps, every promise held")
    assert steps >= 200 or EXAMPLES < 12, f"only {steps} steps ran"
