"""The search engine: a tantivy index of the messages, a rebuildable copy that MongoDB feeds.

Each process that answers searches keeps its own index under ``ARCHIVE_DATA_DIR/search/<db>``,
fed by a change stream on ``messages`` (inserts, updates, deletes) and resumed from the token
saved after each commit. From nothing, from a token MongoDB no longer has, or on request
(``support-archive reindex``), it is rebuilt from MongoDB. MongoDB stays the truth: a hit is
shown only once the message is read back from it, so a lagging index can never show what was
purged or what an agent may no longer see.

The index keeps, of a message, only what search needs: its id (stored), the words of its
subject, text, attachment names and text, authors and recipients (indexed, not stored), and
the filters (account, channel, dates, flags). Deleted documents are tombstones in tantivy until
their segment is rewritten: ``compact`` rebuilds the index when any segment holds deletes, so
that purged words are physically gone from the files within one housekeeping period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tantivy
from bson import ObjectId
from prometheus_client import Counter, Gauge
from pymongo.errors import OperationFailure, PyMongoError

from search import query as q
from store.documents import Direction, Message, SearchIndexEntry

log = logging.getLogger("archive.search")

# Bumped when the schema or what is indexed changes: an index of another version is rebuilt.
SCHEMA_VERSION = 2
ANALYZER = "archive"
# Per message, attachment text and body words beyond these are not indexed (MongoDB keeps all).
MAX_INDEXED_CHARS = 1_000_000
WRITER_HEAP_BYTES = 64_000_000
COMMIT_EVERY = 1000  # events (each holds its document until committed); and whenever idle
REBUILD_BATCH = 2000
STREAM_AWAIT_MS = 100
TOKEN_SAVE_SECONDS = 60.0
STOP_SECONDS = 5.0
HEARTBEAT_SECONDS = 30.0
# An index not heard of for longer is "gone": the residue scan lists it, and it is rebuilt
# from MongoDB before it serves again (its files may hold what was purged meanwhile).
STALE_AFTER = timedelta(minutes=30)
# One not heard of for this long is dropped from the registry (its serve is gone for good);
# should it come back, it is rebuilt all the same.
FORGET_AFTER = timedelta(days=7)
SORT_SHIFT = 20  # sort key = sent_at in ms << 20 | the low 20 bits of the ObjectId counter

INDEX_DOCUMENTS = Gauge("archive_search_documents", "Messages in this process's search index")
INDEX_LAG = Gauge(
    "archive_search_lag_seconds",
    "How far behind MongoDB this process's search index is (0 when caught up)",
)
INDEX_BEHIND = Gauge(
    "archive_search_pending_events", "Changes read from MongoDB not yet committed to the index"
)
INDEX_READY = Gauge("archive_search_ready", "1 when the search index serves the current data")
INDEX_DEGRADED = Gauge(
    "archive_search_degraded", "1 while the search index cannot be written (it retries)"
)
INDEX_EVENTS = Counter("archive_search_events_total", "Changes applied to the index", ["kind"])
INDEX_REBUILDS = Counter("archive_search_rebuilds_total", "Full rebuilds of the index", ["why"])
INDEX_REPAIRS = Counter("archive_search_repaired_days_total", "Days the reconciler re-indexed")

# What the index needs of a message (the rest stays in MongoDB).
INDEXED_FIELDS = (
    "conversation_id", "account_id", "channel", "direction", "subject", "text", "author",
    "sender", "to", "cc", "participants", "sent_at", "collected_at", "archived_at",
    "attachments", "has_attachments", "attachment_text", "restricted", "envelope",
)  # fmt: skip
PROJECTION = dict.fromkeys(INDEXED_FIELDS, 1)


def analyzer() -> tantivy.TextAnalyzer:
    """Words as search sees them: split on what is not a letter or digit, at most 64
    characters, lower case, accents folded (``Déjà`` is ``deja``)."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(q.MAX_TERM_LENGTH + 1))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .build()
    )


def schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_text_field("id", stored=True, tokenizer_name="raw")
    for name in ("conversation", "account", "channel", "participant"):
        b.add_text_field(name, tokenizer_name="raw", index_option="basic")
    # "text" holds the subject, the body and the attachments' names and text together: one
    # field to match words and phrases in (a phrase over three fields at once is several times
    # slower); "subject" again on its own, for subject: and to rank subject words higher.
    for name in ("text", "subject", "from", "to"):
        b.add_text_field(name, tokenizer_name=ANALYZER)
    b.add_integer_field("sort", fast=True, indexed=True)
    b.add_integer_field("arrived", fast=True, indexed=True)
    b.add_integer_field("day", fast=True, indexed=True)
    for name in ("attached", "internal", "restricted"):
        b.add_boolean_field(name, indexed=True)
    return b.build()


SCHEMA = schema()
TEXT_FIELDS = {
    q.TextField.ANY: "text",
    q.TextField.SUBJECT: "subject",
    q.TextField.FROM: "from",
    q.TextField.TO: "to",
}


def millis(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# The sort key is a signed 64-bit integer: times are kept within the years 1691 to 2248 (a
# mail may claim any date; those beyond sort as the nearest end).
_KEY_MILLIS = 1 << (63 - SORT_SHIFT)


def _key_millis(moment: datetime) -> int:
    return max(-_KEY_MILLIS, min(_KEY_MILLIS - 1, millis(moment)))


def sort_key(sent_at: datetime, ident: ObjectId) -> int:
    """Newest-first order as one integer: the time, then (for messages of the same
    millisecond) the low bits of the id's counter."""
    counter = int.from_bytes(ident.binary[-3:], "big") & ((1 << SORT_SHIFT) - 1)
    return (_key_millis(sent_at) << SORT_SHIFT) | counter


def time_bound(moment: datetime) -> int:
    """The sort key at which ``moment`` begins."""
    return _key_millis(moment) << SORT_SHIFT


def document(m: dict[str, Any]) -> tantivy.Document:
    """The index document of a raw message document (as MongoDB returns it)."""
    d = tantivy.Document()
    d.add_text("id", str(m["_id"]))
    d.add_text("conversation", str(m["conversation_id"]))
    d.add_text("account", m.get("account_id") or "")
    d.add_text("channel", str(m.get("channel") or ""))
    for address in m.get("participants") or []:
        d.add_text("participant", address)
    subject = m.get("subject") or ""
    d.add_text("subject", subject)
    d.add_text("text", subject)
    d.add_text("text", (m.get("text") or "")[:MAX_INDEXED_CHARS])
    d.add_text("text", _attachment_words(m))
    d.add_text("from", _people([m.get("author"), m.get("sender")], _envelope(m, "mail_from")))
    d.add_text("to", _people([*(m.get("to") or []), *(m.get("cc") or [])],
                             *_envelope_list(m, "rcpt_tos")))  # fmt: skip
    sent = m["sent_at"]
    d.add_integer("sort", sort_key(sent, m["_id"]))
    d.add_integer("arrived", _key_millis(m.get("archived_at") or m.get("collected_at") or sent))
    d.add_integer("day", _key_millis(sent) // 86_400_000)
    d.add_boolean("attached", bool(m.get("has_attachments")))
    d.add_boolean("internal", m.get("direction") == Direction.INTERNAL.value)
    d.add_boolean("restricted", bool(m.get("restricted")))
    return d


def _attachment_words(m: dict[str, Any]) -> str:
    names = [a.get("filename") or "" for a in m.get("attachments") or []]
    return "\n".join([*names, m.get("attachment_text") or ""])[:MAX_INDEXED_CHARS]


def _people(people: Iterable[dict[str, Any] | None], *extra: str | None) -> str:
    words = [v for p in people if p for v in (p.get("email"), p.get("name")) if v]
    return "\n".join([*words, *(e for e in extra if e)])


def _envelope(m: dict[str, Any], name: str) -> str | None:
    envelope = m.get("envelope") or {}
    value = envelope.get(name)
    return str(value) if value else None


def _envelope_list(m: dict[str, Any], name: str) -> list[str]:
    envelope = m.get("envelope") or {}
    return [str(v) for v in envelope.get(name) or []]


# --- queries --------------------------------------------------------------------------------


class Compiler:
    """Turns a parsed query into a tantivy query. Words are analysed exactly as the index
    analysed the text; field names come from this module, never from the query."""

    def __init__(self) -> None:
        self.analyzer = analyzer()

    def compile(self, node: q.Node) -> tantivy.Query:
        match node:
            case q.Words():
                return self.words(node)
            case q.Account():
                return tantivy.Query.term_query(SCHEMA, "account", node.account_id)
            case q.ChannelIs():
                return tantivy.Query.term_query(SCHEMA, "channel", node.channel)
            case q.Flag():
                name = "attached" if node.name == "has_attachments" else "internal"
                return tantivy.Query.term_query(SCHEMA, name, True)
            case q.Sent():
                return sent_between(node.after, node.before)
            case q.Not():
                return _boolean([], [self.compile(node.node)])
            case q.All():
                must = [self.compile(n) for n in node.nodes if not isinstance(n, q.Not)]
                must_not = [self.compile(n.node) for n in node.nodes if isinstance(n, q.Not)]
                return _boolean(must, must_not)
            case q.Any():
                return tantivy.Query.boolean_query(
                    [(tantivy.Occur.Should, self.compile(n)) for n in node.nodes]
                )
        raise TypeError(node)  # pragma: no cover - every node kind is matched above

    def words(self, node: q.Words) -> tantivy.Query:
        terms = self.analyzer.analyze(" ".join(node.words))
        if not terms:
            return tantivy.Query.empty_query()
        matched = _terms_in(TEXT_FIELDS[node.field], terms)
        if node.field is not q.TextField.ANY:
            return matched
        # Words in the subject count again: they say what the message is about.
        return tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, matched), (tantivy.Occur.Should, _terms_in("subject", terms))]
        )


def _terms_in(name: str, terms: list[str]) -> tantivy.Query:
    if len(terms) == 1:
        return tantivy.Query.term_query(SCHEMA, name, terms[0], index_option="freq")
    return tantivy.Query.phrase_query(SCHEMA, name, list[str | tuple[int, str]](terms))


def _boolean(must: list[tantivy.Query], must_not: list[tantivy.Query]) -> tantivy.Query:
    # tantivy matches nothing with exclusions alone: they exclude from everything.
    clauses = [(tantivy.Occur.Must, m) for m in must or [tantivy.Query.all_query()]]
    clauses += [(tantivy.Occur.MustNot, m) for m in must_not]
    return clauses[0][1] if len(clauses) == 1 else tantivy.Query.boolean_query(clauses)


def sent_between(after: datetime | None, before: datetime | None) -> tantivy.Query:
    if after is None and before is None:
        return tantivy.Query.all_query()
    return tantivy.Query.range_query(
        SCHEMA, "sort", tantivy.FieldType.Integer,
        time_bound(after) if after else None, time_bound(before) if before else None,
        include_upper=before is None,
    )  # fmt: skip


def term(name: str, value: str | bool) -> tantivy.Query:
    return tantivy.Query.term_query(SCHEMA, name, value)


def key_below(key: int) -> tantivy.Query:
    return tantivy.Query.range_query(
        SCHEMA, "sort", tantivy.FieldType.Integer, None, key, include_upper=False
    )


def arrived_by(moment: datetime) -> tantivy.Query:
    return tantivy.Query.range_query(
        SCHEMA, "arrived", tantivy.FieldType.Integer, None, _key_millis(moment)
    )


def all_of(must: Sequence[tantivy.Query], must_not: Sequence[tantivy.Query]) -> tantivy.Query:
    return _boolean(list(must), list(must_not))


@dataclass(frozen=True)
class Page:
    """Ids of one page of hits, in order, with the sort key of each and the total."""

    ids: list[str]
    keys: list[int]
    total: int


def run_search(
    searcher: tantivy.Searcher, query: tantivy.Query, *, limit: int, offset: int, newest: bool
) -> Page:
    """One page: by BM25 score, or by sort key (newest first). Blocking: call in a thread."""
    if newest:
        result = searcher.search(query, limit, count=True, order_by_field="sort", offset=offset,
                                 order=tantivy.Order.Desc)  # fmt: skip
    else:
        result = searcher.search(query, limit, count=True, offset=offset)
    ids, keys = [], []
    for key, address in result.hits:
        ids.append(str(searcher.doc(address)["id"][0]))
        keys.append(int(key) if newest else 0)
    return Page(ids, keys, matches(result))


def matches(result: tantivy.SearchResult) -> int:
    """The exact number of matches of a search run with ``count=True``."""
    return int(getattr(result, "count", 0) or 0)


# --- the index on disk ----------------------------------------------------------------------


@dataclass
class State:
    """What is saved beside the index after each commit."""

    version: int = SCHEMA_VERSION
    database: str = ""
    token: dict[str, Any] | None = None
    built_at: str | None = None
    # The index's own id, by which it registers (``SearchIndexEntry``); new with the index.
    index_id: str | None = None

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        temporary = path.with_suffix(".tmp")
        with temporary.open("w") as out:
            json.dump(self.__dict__, out, default=str)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)


# A file a one-shot ``support-archive reindex`` leaves in the index folder of a running serve:
# its follower rebuilds, then removes it.
REBUILD_REQUEST = "rebuild.request"


def index_path(data_dir: Path, database: str) -> Path:
    return data_dir / "search" / database


class IndexBusy(RuntimeError):
    """Another process writes this index (a serve with the same ARCHIVE_DATA_DIR)."""


def open_index(path: Path) -> tantivy.Index:
    """The index at ``path`` for reading (another process may be writing it)."""
    index = tantivy.Index.open(str(path))
    index.register_tokenizer(ANALYZER, analyzer())
    return index


def deleted_documents(path: Path) -> int:
    """Deleted documents still in the index files (until their segment is rewritten)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum((s.get("deletes") or {}).get("num_deleted_docs", 0) for s in meta["segments"])


@dataclass(frozen=True)
class Presence:
    """What the index files hold of some message ids: searchable, or deleted but not yet
    compacted away."""

    searchable: int = 0
    deleted: int = 0


def presence(path: Path, message_ids: Iterable[str]) -> Presence:
    """How many of ``message_ids`` the index at ``path`` holds. Blocking."""
    each = presence_of_each(path, message_ids).values()
    return Presence(sum(p.searchable for p in each), sum(p.deleted for p in each))


def presence_of_each(path: Path, message_ids: Iterable[str]) -> dict[str, Presence]:
    """What the index at ``path`` holds of each of ``message_ids`` (those it holds nothing
    of are left out), the index opened once for them all: opening it is what costs.
    Blocking."""
    if not (path / "meta.json").exists():
        return {}
    searcher = open_index(path).searcher()
    found: dict[str, Presence] = {}
    for ident in message_ids:
        alive = matches(searcher.search(term("id", ident), 1, count=True))
        deleted = max(0, searcher.doc_freq("id", ident) - alive)
        if alive or deleted:
            found[ident] = Presence(alive, deleted)
    return found


# --- the follower ---------------------------------------------------------------------------


@dataclass
class _Request:
    what: str  # "rebuild", "compact", "reconcile"
    done: asyncio.Future[int]


@dataclass
class SearchIndex:
    """This process's index of one database, and the task that keeps it current."""

    directory: Path  # ARCHIVE_DATA_DIR/search: the index of each database in a folder of its own
    database: str
    heap_bytes: int = WRITER_HEAP_BYTES
    # How long one read of the change stream waits on the server for news: the pace of the
    # follower when idle, and so of ``sync``.
    await_ms: int = STREAM_AWAIT_MS
    clock: Callable[[], float] = time.monotonic
    path: Path = field(init=False)
    index: tantivy.Index | None = field(default=None, init=False)
    state: State = field(init=False)
    ready: bool = field(default=False, init=False)
    # The clock reading at which the last empty read of the change stream began, with all
    # before it committed: every write acknowledged before then is searchable.
    caught_up: float = field(default=float("-inf"), init=False)
    _writer: tantivy.IndexWriter | None = field(default=None, init=False)
    # The writer is used from worker threads, one call at a time; a call still running when
    # the follower is cancelled finishes before the writer is closed.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _requests: list[_Request] = field(default_factory=list, init=False)
    _progress: Callable[[int, int], None] | None = field(default=None, init=False)
    _pending: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list, init=False)
    _saved_at: float = field(default=float("-inf"), init=False)
    stopping: bool = field(default=False, init=False)  # set on the way out: follow no more
    # Why the index cannot be written now (a failure of the writer, as a full disk), or None.
    degraded: str | None = field(default=None, init=False)
    # Its own compaction, scheduler or not: files that hold deleted documents are rewritten
    # at most this long (seconds) after the last rewrite (ARCHIVE_PURGE_INTERVAL); None: only
    # when asked (``request("compact")``).
    compact_every: float | None = None
    # How often it says in MongoDB that it lives, and whether its files hold deletes.
    heartbeat_every: float = HEARTBEAT_SECONDS
    _beat_at: float = field(default=float("-inf"), init=False)
    _compacted_at: float = field(default=float("-inf"), init=False)

    def __post_init__(self) -> None:
        self.path = self.directory / self.database
        self.state = State(database=self.database)

    # -- opening -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the index and its writer; an index of another schema version or
        database, or one that does not open, is replaced by an empty one (then rebuilt)."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = State.load(self.path / "state.json")
        usable = (state is not None and state.version == SCHEMA_VERSION
                  and state.database == self.database)  # fmt: skip
        if usable:
            try:
                self.index = tantivy.Index(SCHEMA, path=str(self.path), reuse=True)
            except (OSError, ValueError) as exc:
                log.warning("search index does not open (%s); rebuilding it", type(exc).__name__)
                usable = False
        if not usable:
            shutil.rmtree(self.path)
            self.path.mkdir(parents=True, mode=0o700)
            self.index = tantivy.Index(SCHEMA, path=str(self.path), reuse=False)
            state = State(database=self.database)
        assert self.index is not None and state is not None
        self.index.register_tokenizer(ANALYZER, analyzer())
        try:
            self._writer = self.index.writer(self.heap_bytes, 1)
        except ValueError as exc:
            raise IndexBusy(
                f"the search index in {self.path} is in use by another process: give each "
                "serve its own ARCHIVE_DATA_DIR"
            ) from exc
        if state.index_id is None:
            state.index_id = uuid.uuid4().hex
            state.save(self.path / "state.json")
        self.state = state
        self._compacted_at = self.clock()  # its first compaction one interval after it opens
        self._count()

    def close(self) -> None:
        with self._lock:
            self._drop_writer()

    def _drop_writer(self) -> None:
        """Let the writer go, and its lock on the index directory with it, now: waiting for
        its merges consumes it, even one that failed (otherwise the lock lives as long as
        anything refers to the writer, e.g. the traceback of the failure that broke it)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(ValueError):
                writer.wait_merging_threads()

    async def _locked(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run ``work`` in a worker thread with the writer to itself."""

        def run() -> Any:
            with self._lock:
                if self._writer is None:
                    raise RuntimeError("the search index is closed")
                return work(*args)

        return await asyncio.to_thread(run)

    def searcher(self) -> tantivy.Searcher:
        assert self.index is not None
        return self.index.searcher()

    # -- waiting -----------------------------------------------------------------------------

    async def sync(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until every write acknowledged before this call is searchable."""
        asked = self.clock()
        deadline = asked + timeout
        while self.caught_up < asked:
            if self.clock() > deadline:
                raise TimeoutError("the search index did not catch up in time")
            await asyncio.sleep(0.01)

    async def request(self, what: str, *, timeout: float = 3600.0) -> int:  # noqa: ASYNC109
        """Run ``rebuild``, ``compact`` or ``reconcile`` in the follower; returns how many
        documents (or days) it re-indexed."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._requests.append(_Request(what, done))
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            raise TimeoutError(f"the search index did not {what} within {timeout:.0f}s") from None

    # -- following ---------------------------------------------------------------------------

    async def follow(self) -> None:
        """Keep the index current until cancelled: rebuild if there is nothing to resume
        from, then apply the change stream; reconnect after database errors. Nothing stops
        it but cancellation: any other failure is logged and retried."""
        backoff = 0.5
        stale_checked = False
        while not self.stopping:
            try:
                collection = Message.get_pymongo_collection()
                if not stale_checked:
                    if await self._gone_too_long():
                        self.state.token = None
                    stale_checked = True  # once it answered: a database error asks again
                if self.state.token is None:
                    await self._rebuild(collection, why="new")
                async with await collection.watch(
                    full_document="updateLookup", resume_after=self.state.token,
                    max_await_time_ms=self.await_ms, batch_size=REBUILD_BATCH,
                ) as stream:  # fmt: skip
                    self.ready = True
                    INDEX_READY.set(1)
                    backoff = 0.5
                    await self._apply(stream, collection)
            except asyncio.CancelledError:
                raise
            except OperationFailure as exc:
                if exc.code in {260, 280, 286}:  # the token is invalid or its history is gone
                    log.warning("search index cannot resume its change stream (code %s); "
                                "rebuilding", exc.code)  # fmt: skip
                    self.state.token = None
                    INDEX_REBUILDS.labels("history lost").inc()
                    continue
                log.warning("search index: database error %s; retrying", exc.code)
            except PyMongoError as exc:
                log.warning("search index: database unavailable (%s); retrying",
                            type(exc).__name__)  # fmt: skip
            except Exception as exc:  # a bug must not stop search from following MongoDB
                log.exception("search index: %s while following; retrying", type(exc).__name__)
                await self._heal(exc)
            self.ready = False
            INDEX_READY.set(0)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _heal(self, failure: Exception) -> None:
        """A tantivy writer that failed once (a full disk, any I/O error) refuses every call
        after: it is dropped and another opened, again at each retry until the cause is gone
        (an index that no longer opens is replaced and rebuilt). What the failed commit held
        is not lost: the change stream resumes from the last token saved with a commit."""
        self.degraded = f"the index cannot be written ({type(failure).__name__}); retrying"
        INDEX_DEGRADED.set(1)
        self._pending = []
        try:
            await asyncio.to_thread(self._reopen)
        except Exception as exc:
            log.warning("search index: reopening it failed (%s); retrying", type(exc).__name__)

    def _reopen(self) -> None:
        with self._lock:
            self._drop_writer()
            self.open()

    async def _apply(self, stream: Any, collection: Any) -> None:
        while not self.stopping:
            self._take_file_request()
            if await self._serve_requests(collection):
                return  # rebuilt: follow on from the rebuild's own token
            started = self.clock()
            change = await stream.try_next()
            while change is not None:
                self._take(change)
                if len(self._pending) >= COMMIT_EVERY:
                    break
                change = await stream.try_next()
            invalidated = bool(self._pending) and self._pending[-1][0] == "invalidate"
            await self._commit(stream.resume_token)
            if invalidated:  # the collection was dropped or renamed: start over
                self.state.token = None
                return
            if await self._maintain(collection):
                return  # compacted (rebuilt): follow on from the rebuild's own token
            if change is None:
                self.caught_up = started
                INDEX_LAG.set(0)

    def _take(self, change: dict[str, Any]) -> None:
        kind = change["operationType"]
        if kind in {"insert", "replace", "update", "delete"}:
            ident = change["documentKey"]["_id"]
            # An update's document as it is now (None when deleted since): the index always
            # takes the latest state, so applying a change twice, or late, does no harm.
            latest = change.get("fullDocument")
            self._pending.append(("upsert", latest or {"_id": ident, "gone": True}))
        elif kind in {"drop", "rename", "dropDatabase", "invalidate"}:
            self._pending.append(("invalidate", None))
        INDEX_BEHIND.set(len(self._pending))
        at = change.get("wallTime")
        if isinstance(at, datetime):
            INDEX_LAG.set(max(0.0, (datetime.now(UTC) - _aware(at)).total_seconds()))

    async def _commit(self, token: Any) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await self._locked(self._write, pending)
            for kind, doc in pending:
                INDEX_EVENTS.labels("delete" if doc is None or doc.get("gone") else kind).inc()
            if self.degraded is not None:
                log.info("search index: written again")
                self.degraded = None
                INDEX_DEGRADED.set(0)
        # An idle stream's token moves on with every read: saved once a minute (so that a
        # restart does not resume from before the oplog's window), and after every commit.
        idle_save_due = self.clock() - self._saved_at > TOKEN_SAVE_SECONDS
        if token is not None and (pending or (token != self.state.token and idle_save_due)):
            self.state.token = dict(token)
            self.state.save(self.path / "state.json")
            self._saved_at = self.clock()
        INDEX_BEHIND.set(0)

    def _write(self, pending: list[tuple[str, dict[str, Any] | None]]) -> None:
        writer = self._writer
        assert writer is not None and self.index is not None
        for kind, doc in pending:
            if kind != "upsert" or doc is None:
                continue
            writer.delete_documents_by_term("id", str(doc["_id"]))
            if not doc.get("gone") and "sent_at" in doc:
                writer.add_document(document(doc))
        writer.commit()
        self.index.reload()
        self._count()

    def _count(self) -> None:
        assert self.index is not None
        self.index.reload()
        INDEX_DOCUMENTS.set(self.index.searcher().num_docs)

    # -- accounted for: the registry and its own compaction ---------------------------------

    async def _maintain(self, collection: Any) -> bool:
        """Every ``heartbeat_every``: compact if the files hold deleted documents and the last
        compaction is ``compact_every`` ago, then say so in the registry. True if it rebuilt."""
        if self.clock() - self._beat_at < self.heartbeat_every:
            return False
        self._beat_at = self.clock()
        deleted = await asyncio.to_thread(deleted_documents, self.path)
        rebuilt = False
        if (
            deleted
            and self.compact_every is not None
            and (self.clock() - self._compacted_at >= self.compact_every)
        ):
            await self._rebuild(collection, why="compact")
            deleted, rebuilt = 0, True
        if not deleted:
            self._compacted_at = self.clock()
        await self._register(clean=not deleted)
        return rebuilt

    async def _register(self, *, clean: bool) -> None:
        now = datetime.now(UTC)
        fields: dict[str, Any] = {"host": socket.gethostname(), "path": str(self.path),
                                  "heartbeat_at": now}  # fmt: skip
        if clean and self.caught_up > float("-inf"):
            # Not the time of this write: the moment up to which every change of MongoDB is
            # applied (and none left a deleted document) — a purge after it may not be.
            fields["compacted_at"] = now - timedelta(seconds=self.clock() - self.caught_up)
        await SearchIndexEntry.get_pymongo_collection().update_one(
            {"_id": self.state.index_id}, {"$set": fields, "$setOnInsert": {"started_at": now}},
            upsert=True,
        )  # fmt: skip

    async def _gone_too_long(self) -> bool:
        """Whether this index was not heard of for longer than ``STALE_AFTER``: what was
        purged meanwhile may still be in its files, so it is rebuilt before it serves."""
        entry = await SearchIndexEntry.get_pymongo_collection().find_one(
            {"_id": self.state.index_id}, {"heartbeat_at": 1}
        )
        if entry is None:
            # Never registered (new), or forgotten after FORGET_AFTER: an index that served
            # before is rebuilt (as is, once, one from before the registry).
            return self.state.token is not None
        seen = entry["heartbeat_at"]
        seen = seen if seen.tzinfo else seen.replace(tzinfo=UTC)
        if datetime.now(UTC) - seen <= STALE_AFTER:
            return False
        log.warning("search index: not heard of since %s; rebuilding it before it serves",
                    seen.isoformat())  # fmt: skip
        return True

    # -- rebuilding, compacting, reconciling -------------------------------------------------

    def _take_file_request(self) -> None:
        request = self.path / REBUILD_REQUEST
        if not request.exists() or any(r.what == "rebuild" for r in self._requests):
            return
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _: request.unlink(missing_ok=True))
        self._requests.append(_Request("rebuild", done))
        log.info("search index: a rebuild was asked for (support-archive reindex)")

    async def _serve_requests(self, collection: Any) -> bool:
        """Run what was asked; True when the index was rebuilt."""
        rebuilt = False
        while self._requests:
            request = self._requests.pop(0)
            try:
                if request.what in {"rebuild", "compact"}:
                    if request.what == "compact" and not deleted_documents(self.path):
                        result = 0
                    else:
                        result = await self._rebuild(collection, why=request.what)
                        rebuilt = True
                elif request.what == "reconcile":
                    result = await self._reconcile(collection)
                else:
                    raise ValueError(request.what)
            except BaseException as exc:
                if not request.done.done():
                    request.done.set_exception(exc)
                raise
            request.done.set_result(result)
        return rebuilt

    async def _rebuild(self, collection: Any, *, why: str) -> int:
        """Index every message again from MongoDB, replacing what the index held: the new
        contents become visible at once, at the end (searches go on meanwhile). Changes made
        while it runs are applied after it, from the token taken before it began."""
        INDEX_REBUILDS.labels(why).inc()
        started = time.perf_counter()
        async with await collection.watch(max_await_time_ms=self.await_ms) as stream:
            await stream.try_next()  # the token of "now", before the scan
            token = stream.resume_token
        total = await collection.estimated_document_count()
        log.info("search index: rebuilding (%s) from %d messages", why, total)
        writer = self._writer
        assert writer is not None
        await self._locked(writer.delete_all_documents)
        done = 0
        async for batch in _batches(collection.find({}, PROJECTION).batch_size(REBUILD_BATCH)):
            await self._locked(_add_all, writer, batch)
            done += len(batch)
            if self._progress is not None:
                self._progress(done, total)
            if self.clock() - self._beat_at >= self.heartbeat_every:  # alive while it rebuilds
                self._beat_at = self.clock()
                await self._register(clean=False)
            if done % 100_000 < len(batch):
                log.info("search index: rebuilt %d of about %d messages", done, total)
        await self._locked(self._finish_rebuild)
        self.state.token = dict(token) if token is not None else None
        self.state.built_at = datetime.now(UTC).isoformat()
        self.state.save(self.path / "state.json")
        log.info("search index: rebuilt %d messages in %.1fs", done,
                 time.perf_counter() - started)  # fmt: skip
        return done

    def _finish_rebuild(self) -> None:
        writer = self._writer
        assert writer is not None
        writer.commit()
        writer.garbage_collect_files()
        self._count()

    async def _reconcile(self, collection: Any) -> int:
        """Compare messages per day in MongoDB and in the index; re-index every day that
        differs (drift: a lost event, a restored backup). Returns how many days it repaired."""
        pipeline = [{"$group": {"_id": {"$floor": {"$divide": [{"$toLong": "$sent_at"},
                                                                86_400_000]}},
                                "n": {"$sum": 1}}}]  # fmt: skip
        truth = {int(d["_id"]): d["n"] async for d in await collection.aggregate(pipeline)}
        indexed = await asyncio.to_thread(self._days)
        drifted = sorted(d for d in truth.keys() | indexed.keys() if truth.get(d) != indexed.get(d))
        for day in drifted:
            start = datetime.fromtimestamp(day * 86_400, UTC)
            end = datetime.fromtimestamp((day + 1) * 86_400, UTC)
            found = collection.find({"sent_at": {"$gte": start, "$lt": end}}, PROJECTION)
            docs = [d async for d in found]
            await self._locked(self._replace_day, day, docs)
            INDEX_REPAIRS.inc()
            log.warning("search index: day %s differed from MongoDB (%d indexed, %d stored); "
                        "re-indexed", start.date(), indexed.get(day, 0), len(docs))  # fmt: skip
        return len(drifted)

    def _days(self) -> dict[int, int]:
        searcher = self.searcher()
        if searcher.num_docs == 0:
            return {}
        found = searcher.aggregate(
            tantivy.Query.all_query(), {"days": {"terms": {"field": "day", "size": 1_000_000}}}
        )
        return {int(b["key"]): int(b["doc_count"]) for b in found["days"]["buckets"]}

    def _replace_day(self, day: int, docs: list[dict[str, Any]]) -> None:
        writer = self._writer
        assert writer is not None
        writer.delete_documents_by_query(
            tantivy.Query.range_query(SCHEMA, "day", tantivy.FieldType.Integer, day, day)
        )
        _add_all(writer, docs)
        writer.commit()
        self._count()


def _add_all(writer: tantivy.IndexWriter, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        writer.add_document(document(doc))


async def _batches(cursor: Any, size: int = REBUILD_BATCH) -> AsyncIterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    async for doc in cursor:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def rebuild_here(index: SearchIndex, *, progress: Callable[[int, int], None]) -> int:
    """Rebuild ``index`` in this process (no serve follows it): the next serve resumes from
    the token saved here. Raises ``IndexBusy`` when a serve has it."""
    await asyncio.to_thread(index.open)
    index._progress = progress
    try:
        return await index._rebuild(Message.get_pymongo_collection(), why="reindex")
    finally:
        await asyncio.to_thread(index.close)


async def forget_gone_indexes(*, now: datetime) -> int:
    """Drop from the registry the indexes not heard of for ``FORGET_AFTER`` (housekeeping)."""
    gone = await SearchIndexEntry.get_pymongo_collection().delete_many(
        {"heartbeat_at": {"$lt": now - FORGET_AFTER}}
    )
    if gone.deleted_count:
        log.warning("search index: %d indexes not heard of for %d days dropped from the "
                    "registry", gone.deleted_count, FORGET_AFTER.days)  # fmt: skip
    return int(gone.deleted_count)


@contextlib.asynccontextmanager
async def following(index: SearchIndex) -> AsyncIterator[SearchIndex]:
    """Open the index and keep it current in the background while the context lasts."""
    await asyncio.to_thread(index.open)
    task = asyncio.create_task(index.follow(), name="search-index")
    try:
        yield index
    finally:
        index.stopping = True
        await _stopped(task)
        await asyncio.to_thread(index.close)
        index.ready = False
        INDEX_READY.set(0)


async def _stopped(task: asyncio.Task[None]) -> None:
    """Cancel the follower and wait for it, a bounded time: a change stream's clean-up after a
    cancelled read can wait on the server, and is cancelled in turn."""
    for _ in range(3):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOP_SECONDS)
        if done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("search index: its follower ended with %s",
                            type(task.exception()).__name__)  # fmt: skip
            return
    log.warning("search index: its follower did not stop within %.0fs; leaving it",
                3 * STOP_SECONDS)  # fmt: skip
