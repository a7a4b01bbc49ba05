"""Search side by side, in one run on the same data: this engine (tantivy), MongoDB's own
``$text`` index, and the term arrays of earlier versions.

    .venv/bin/python -m bench.search --messages 1000000 --accounts 10000

Loads messages of 40 words (a Zipf vocabulary of 50,000 words) raw into a fresh database of an
embedded mongod under bench/out/, builds each engine's index (time, rate, size on disk), runs the
same query strings through all three (p50/p95 per scope, order and kind of query), then purges an
account as retention does and times until this engine no longer finds it. Writes
bench/out/search.json and bench/out/search.md (the tables for docs/search.md).

- tantivy: ``search.engine.search``, the API's path without HTTP and audit (the engine, the
  read-back of hits from MongoDB, snippets), on a ``SearchIndex`` built by its own rebuild;
- ``$text``: one text index on subject and text (subject weighs 2, no stemming so that all three
  match the same words), every word quoted (AND), ``textScore`` or ``sent_at`` order;
- term arrays: bench/term_arrays.py, the approach of ``store/search.py`` before tantivy.

The peers know no operators: ``from:`` and ``after:`` reach them as the filters their
searches had (``participants``, ``sent_at``), as the old API's query parameters did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import statistics
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as midnight
from pathlib import Path
from typing import Any, Protocol

import bson
from bson import ObjectId
from pymongo import DESCENDING, TEXT, WriteConcern
from tqdm import tqdm

from bench import term_arrays
from retention.rules import RetentionPolicy
from retention.sweep import sweep
from search.engine import (
    HIT_FIELDS,
    Filters,
    Order,
    Results,
    Summary,
    parse_query,
    search,
    snippet,
)
from search.index import SearchIndex, following
from store.accounts import register_account, request_erasure
from store.database import Database, open_database
from store.documents import Message, utcnow
from store.embedded import EmbeddedMongo
from store.words import words_of

OUT = Path(__file__).parent / "out"
DATABASE = "bench_search"
VOCABULARY = 50_000
WORDS_PER_MESSAGE = 40
SECONDS_APART = 30
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LIMIT = 20
MIN_QUERIES = 8  # a cell whose time budget runs out still has this many queries
TEXT_INDEX = "bench_text"
ENGINES = {"tantivy": "tantivy (this engine)", "text": "MongoDB $text",
           "term_arrays": "term arrays (before)"}  # fmt: skip
NEWEST_FIRST = [("sent_at", DESCENDING), ("_id", DESCENDING)]


@dataclass(frozen=True)
class Settings:
    messages: int = 1_000_000
    accounts: int = 10_000
    repeats: int = 40
    seed: int = 7
    budget: float = 30.0  # seconds of queries per engine and cell, once MIN_QUERIES ran
    data: Path = OUT / "search-db"
    cache_size_gb: float = 4.0
    keep: bool = False


# --- the data -------------------------------------------------------------------------------


def vocabulary(rng: random.Random) -> list[str]:
    """Random words; a word's position is its rank (0 is the most common)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered


def zipf(n: int) -> list[float]:
    cumulative, total = [], 0.0
    for rank in range(1, n + 1):
        total += 1.0 / rank
        cumulative.append(total)
    return cumulative


def address(account: str) -> str:
    return f"{account}@example.com"


def make_message(
    rng: random.Random, words: list[str], cumulative: list[float], accounts: int, n: int
) -> dict[str, Any]:
    chosen = rng.choices(words, cum_weights=cumulative, k=WORDS_PER_MESSAGE)
    text = " ".join(chosen)
    subject = " ".join(chosen[:4])
    account = f"acct-{rng.randrange(accounts)}"
    sent = T0 + timedelta(seconds=n * SECONDS_APART + rng.randrange(SECONDS_APART))
    return {
        "_id": ObjectId(), "conversation_id": ObjectId(), "account_id": account,
        "channel": "chat" if n % 3 else "email", "direction": "inbound", "source": "bench",
        "dedup_key": f"bench:{n}", "external_id": str(n), "message_id_header": None,
        "in_reply_to": None, "references": [], "subject": subject,
        "author": {"role": "customer", "name": None, "email": address(account)},
        "sender": None, "to": [], "cc": [], "participants": [address(account)],
        "sent_at": sent, "collected_at": sent, "archived_at": sent, "text": text, "html": None,
        "body_truncated": False, "attachments": [], "has_attachments": False,
        "attachment_text": "", "restricted": False, "raw": None, "envelope": None,
        "parse_error": None, "history": [],
        # Only the term arrays read it; the other engines pay its bytes in the documents.
        "search_terms": term_arrays.terms_of(subject, text),
    }  # fmt: skip


async def load(settings: Settings) -> tuple[list[str], int]:
    """Insert the messages; returns the vocabulary and the bytes the term arrays add."""
    rng = random.Random(settings.seed)
    words = vocabulary(rng)
    cumulative = zipf(VOCABULARY)
    collection = Message.get_pymongo_collection().with_options(write_concern=WriteConcern(w=1))
    terms_bytes = 0
    batch: list[dict[str, Any]] = []
    with tqdm(total=settings.messages, unit="msg", desc="loading", mininterval=5) as bar:
        for n in range(settings.messages):
            message = make_message(rng, words, cumulative, settings.accounts, n)
            if n % 100 == 0:  # sampled: the encoded size of the field
                terms_bytes += 100 * len(bson.encode({"search_terms": message["search_terms"]}))
            batch.append(message)
            if len(batch) == 5000 or n == settings.messages - 1:
                await collection.insert_many(batch, ordered=False)
                bar.update(len(batch))
                batch = []
    return words, terms_bytes


# --- the queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    q: str
    account: str | None  # the scope: one account, or None for all


@dataclass
class Draw:
    """Draws query words by rank, an address and a day, for one sample."""

    rng: random.Random
    words: list[str]
    messages: int
    address: str = ""

    def word(self, low: int, high: int) -> str:
        return self.words[self.rng.randrange(low, high)]

    def day(self) -> str:
        span = self.messages * SECONDS_APART
        moment = T0 + timedelta(seconds=self.rng.uniform(0.5, 0.95) * span)
        return moment.date().isoformat()


KINDS: dict[str, Callable[[Draw], str]] = {
    "rare word": lambda d: d.word(30_000, VOCABULARY),
    "medium word": lambda d: d.word(300, 1_000),
    "common word": lambda d: d.word(0, 10),
    "two words": lambda d: f"{d.word(0, 50)} {d.word(50, 500)}",
    "phrase": lambda d: f'"{d.word(0, 20)} {d.word(0, 20)}"',
    "from: and a word": lambda d: f"from:{d.address} {d.word(0, 50)}",
    "a word and after:": lambda d: f"{d.word(50, 500)} after:{d.day()}",
}
SCOPES = ("account", "global")


def samples(settings: Settings, words: list[str]) -> dict[tuple[str, str], list[Sample]]:
    """The query strings of every scope and kind, the same for every engine and order. In
    account scope, ``from:`` names the account's own address; globally, any account's."""
    rng = random.Random(settings.seed + 1)
    drawn: dict[tuple[str, str], list[Sample]] = {}
    for scope in SCOPES:
        for kind, make in KINDS.items():
            drawn[scope, kind] = []
            for _ in range(settings.repeats):
                account = f"acct-{rng.randrange(settings.accounts)}"
                other = f"acct-{rng.randrange(settings.accounts)}"
                mine = scope == "account"
                draw = Draw(rng, words, settings.messages, address(account if mine else other))
                drawn[scope, kind].append(Sample(make(draw), account if mine else None))
    return drawn


@dataclass(frozen=True)
class PeerQuery:
    """A bench query as the peers take it: the text, and the operators as filters."""

    text: str
    participant: str | None = None
    since: datetime | None = None


_OPERATOR = re.compile(r"^(from|after):(\S+)$")


def peer_query(q: str) -> PeerQuery:
    rest, participant, since = [], None, None
    for token in q.split(" "):
        found = _OPERATOR.match(token)
        if found is None:
            rest.append(token)
        elif found[1] == "from":
            participant = found[2].lower()
        else:
            since = datetime.combine(date.fromisoformat(found[2]), midnight(), UTC)
    return PeerQuery(" ".join(rest), participant, since)


# --- the engines ----------------------------------------------------------------------------


class Engine(Protocol):
    name: str

    async def run(self, sample: Sample, order: Order) -> list[str]:
        """The ids of the first page of hits, with snippets made as the API makes them."""
        ...


@dataclass
class Tantivy:
    index: SearchIndex
    name: str = "tantivy"

    async def run(self, sample: Sample, order: Order) -> list[str]:
        results = await search(
            index=self.index, query=parse_query(sample.q),
            filters=Filters(account_id=sample.account, hide_restricted=True),
            order=order, limit=LIMIT, after=None,
        )  # fmt: skip
        return [str(hit.message.id) for hit in results.hits]


def _hits(docs: list[dict[str, Any]], text: str) -> list[str]:
    wanted = frozenset(words_of(text))
    for doc in docs:
        Summary.of(doc)
        snippet(doc.get("text") or doc.get("subject") or "", wanted)
    return [str(doc["_id"]) for doc in docs]


def _scope(sample: Sample, peer: PeerQuery) -> dict[str, Any]:
    scope: dict[str, Any] = {"restricted": {"$ne": True}}
    if sample.account is not None:
        scope["account_id"] = sample.account
    if peer.participant is not None:
        scope["participants"] = peer.participant
    if peer.since is not None:
        scope["sent_at"] = {"$gte": peer.since}
    return scope


@dataclass
class MongoText:
    name: str = "text"

    async def run(self, sample: Sample, order: Order) -> list[str]:
        peer = peer_query(sample.q)
        parsed = term_arrays.parse(peer.text)
        # Each word quoted: $text ORs bare words, and ANDs quoted ones (phrases).
        quoted = [f'"{w}"' for w in parsed.words] + [f'"{" ".join(p)}"' for p in parsed.phrases]
        query = {"$text": {"$search": " ".join(quoted)}, **_scope(sample, peer)}
        fields = {**HIT_FIELDS, "score": {"$meta": "textScore"}}
        cursor = Message.get_pymongo_collection().find(query, fields)
        if order is Order.RELEVANCE:
            cursor = cursor.sort([("score", {"$meta": "textScore"})])
        else:
            cursor = cursor.sort(NEWEST_FIRST)
        return _hits(await cursor.limit(LIMIT).to_list(), peer.text)


@dataclass
class TermArrays:
    name: str = "term_arrays"

    async def run(self, sample: Sample, order: Order) -> list[str]:
        peer = peer_query(sample.q)
        docs = await term_arrays.search(
            Message.get_pymongo_collection(), term_arrays.parse(peer.text),
            account_id=sample.account, participant=peer.participant, since=peer.since,
            newest=order is Order.NEWEST, limit=LIMIT, fields=HIT_FIELDS,
        )  # fmt: skip
        return _hits(docs, peer.text)


# --- building the indexes -------------------------------------------------------------------


@dataclass
class Build:
    seconds: float
    size_mb: float
    rate: float  # messages per second
    note: str = ""


async def index_sizes(database: Database) -> dict[str, int]:
    """Bytes on disk of each index of ``messages``, after a checkpoint."""
    await database.client.admin.command("fsync")
    found = await Message.get_pymongo_collection().aggregate([{"$collStats": {"storageStats": {}}}])
    stats = (await found.to_list())[0]["storageStats"]
    return {name: int(size) for name, size in stats["indexSizes"].items()}


async def build_text(database: Database, messages: int) -> Build:
    collection = Message.get_pymongo_collection()
    await _drop_indexes(collection, [TEXT_INDEX])
    started = time.perf_counter()
    await collection.create_index(
        [("subject", TEXT), ("text", TEXT)], name=TEXT_INDEX, weights={"subject": 2, "text": 1},
        default_language="none",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    size = (await index_sizes(database))[TEXT_INDEX]
    return Build(seconds, size / 1e6, messages / seconds, "one text index (subject, text)")


async def build_term_arrays(database: Database, messages: int, terms_bytes: int) -> Build:
    collection = Message.get_pymongo_collection()
    names = [term_arrays.GLOBAL_INDEX, term_arrays.ACCOUNT_INDEX]
    await _drop_indexes(collection, names)
    started = time.perf_counter()
    await collection.create_indexes(term_arrays.INDEXES)
    seconds = time.perf_counter() - started
    sizes = await index_sizes(database)
    note = (f"two multikey indexes; the search_terms field adds {terms_bytes / 1e6:,.0f} MB "
            "(BSON) to the documents")  # fmt: skip
    return Build(seconds, sum(sizes[n] for n in names) / 1e6, messages / seconds, note)


async def _drop_indexes(collection: Any, names: list[str]) -> None:
    existing = {i["name"] async for i in await collection.list_indexes()}
    for name in names:
        if name in existing:
            await collection.drop_index(name)


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


async def rebuilt(index: SearchIndex, messages: int) -> float:
    """Wait for the first rebuild of a new index (it starts on following); its seconds."""
    started = time.perf_counter()
    deadline = started + max(600.0, messages / 200)
    with tqdm(total=messages, unit="msg", desc="tantivy", mininterval=5) as bar:

        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        index._progress = progress
        while not index.ready:
            if time.perf_counter() > deadline:
                raise RuntimeError("the search index was not rebuilt in time (see the log)")
            await asyncio.sleep(0.02)
    index._progress = None
    return time.perf_counter() - started


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Cell:
    engine: str
    scope: str
    order: str
    kind: str
    times: list[float] = field(default_factory=list)  # ms

    @property
    def spent(self) -> float:
        return sum(self.times) / 1000

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.times)
        return {"engine": self.engine, "scope": self.scope, "order": self.order,
                "kind": self.kind, "n": len(ordered),
                "p50_ms": round(statistics.median(ordered), 2),
                "p95_ms": round(percentile(ordered, 0.95), 2),
                "max_ms": round(ordered[-1], 2)}  # fmt: skip


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least ``p`` of the values at or below it."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


@dataclass
class Agreement:
    """Newest-first pages that a peer returned exactly as tantivy did (same ids, same order):
    the three engines match the same words, so these should all agree."""

    same: dict[str, int] = field(default_factory=dict)
    compared: dict[str, int] = field(default_factory=dict)

    def add(self, engine: str, ids: list[str], reference: list[str]) -> None:
        self.compared[engine] = self.compared.get(engine, 0) + 1
        self.same[engine] = self.same.get(engine, 0) + (ids == reference)


async def measure(
    engines: list[Engine], drawn: dict[tuple[str, str], list[Sample]], settings: Settings
) -> tuple[list[Cell], Agreement]:
    """Every sample through every engine, the engines taking turns in a rotating order (so
    that none always runs on caches another warmed); a cell that spent its time budget stops
    after MIN_QUERIES."""
    cells: list[Cell] = []
    agreement = Agreement()
    for scope in SCOPES:
        for order in (Order.RELEVANCE, Order.NEWEST):
            for kind in KINDS:
                row = {e.name: Cell(e.name, scope, order.value, kind) for e in engines}
                for i, sample in enumerate(drawn[scope, kind]):
                    pages = await _one_sample(engines, row, sample, order, i, settings.budget)
                    if order is Order.NEWEST and "tantivy" in pages:
                        for name, ids in pages.items():
                            if name != "tantivy":
                                agreement.add(name, ids, pages["tantivy"])
                cells += row.values()
                print(f"{scope:8} {order.value:10} {kind:18}" + "".join(
                    f" | {n} p50 {c.summary()['p50_ms']:8.1f} p95 {c.summary()['p95_ms']:8.1f}"
                    f" (n={len(c.times)})" for n, c in row.items()), flush=True)  # fmt: skip
    return cells, agreement


async def _one_sample(
    engines: list[Engine], row: dict[str, Cell], sample: Sample, order: Order, i: int,
    budget: float,
) -> dict[str, list[str]]:  # fmt: skip
    pages = {}
    for engine in engines[i % len(engines) :] + engines[: i % len(engines)]:
        cell = row[engine.name]
        if cell.spent > budget and len(cell.times) >= MIN_QUERIES:
            continue
        started = time.perf_counter()
        pages[engine.name] = await engine.run(sample, order)
        cell.times.append((time.perf_counter() - started) * 1000)
    return pages


# --- a purged account disappearing ----------------------------------------------------------


async def _until_empty(results: Callable[[], Awaitable[Results]], within: float = 120) -> float:
    """Poll until the search finds nothing (no hits and a total of 0); when it did."""
    deadline = time.perf_counter() + within
    while True:
        found = await results()
        if found.total == 0 and not found.hits:
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError("the purged account is still found")
        await asyncio.sleep(0.005)


async def purge_one(
    database: Database, index: SearchIndex, engines: list[Engine], words: list[str],
    settings: Settings,
) -> dict[str, Any]:  # fmt: skip
    """Erase an account as retention does (the erasure request, then a sweep that waits for
    this index), timing until tantivy no longer finds its messages: for agents (hidden) and
    for compliance (gone from the index)."""
    rank = {w: r for r, w in enumerate(words)}
    collection = Message.get_pymongo_collection()
    # An account that still has messages (a kept database lost one to each earlier run).
    rng = random.Random(settings.seed + 2)
    first = None
    while first is None:
        account = f"acct-{rng.randrange(settings.accounts)}"
        first = await collection.find_one({"account_id": account}, {"text": 1})
    word = max(words_of(first["text"]), key=rank.__getitem__)  # its rarest word
    messages = await collection.count_documents({"account_id": account})
    await register_account(account_id=account, emails=[address(account)], name=None)

    def found(*, hide: bool) -> Callable[[], Awaitable[Results]]:
        return lambda: search(
            index=index, query=parse_query(word),
            filters=Filters(account_id=account, hide_restricted=hide),
            order=Order.NEWEST, limit=LIMIT, after=None,
        )  # fmt: skip

    assert (await found(hide=False)()).total > 0
    started = time.perf_counter()
    await request_erasure(account_id=account, now=utcnow())
    hidden = await _until_empty(found(hide=True)) - started
    policy = RetentionPolicy(
        grace=timedelta(days=180), max_age=timedelta(days=3650), secret_key=b"bench" * 8,
        data_dir=index.directory.parent,
    )  # fmt: skip
    swept = time.perf_counter()
    task = asyncio.create_task(sweep(database, now=utcnow(), policy=policy,
                                     index_synced=index.sync))  # fmt: skip
    gone = await _until_empty(found(hide=False)) - swept
    report = await task
    sweep_seconds = time.perf_counter() - swept
    peers = {e.name: await e.run(Sample(word, account), Order.NEWEST) for e in engines}
    assert not any(peers.values()), f"a peer still finds the purged account: {peers}"
    return {"messages": messages, "purged": report.messages, "residue": report.residue,
            "hidden_from_agents_s": round(hidden, 3), "gone_from_index_s": round(gone, 3),
            "sweep_s": round(sweep_seconds, 3)}  # fmt: skip


# --- the run --------------------------------------------------------------------------------


@dataclass
class Report:
    settings: dict[str, Any]
    machine: dict[str, Any]
    load_seconds: float | None
    builds: dict[str, Build]
    cells: list[dict[str, Any]]
    agreement: dict[str, list[int]]
    purge: dict[str, Any]

    def worst(self, scope: str, engine: str) -> dict[str, Any]:
        mine = [c for c in self.cells if c["scope"] == scope and c["engine"] == engine]
        return max(mine, key=lambda c: c["p95_ms"])


async def run(settings: Settings) -> Report:
    """The whole comparison; prints its progress and the tables, writes bench/out/search.*."""
    OUT.mkdir(exist_ok=True)
    machine: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    loaded = settings.data / "loaded.json"
    keep = settings.keep and loaded.exists() and _same_data(loaded, settings)
    if not keep:
        shutil.rmtree(settings.data, ignore_errors=True)
    archive = settings.data / "archive"  # as ARCHIVE_DATA_DIR: the index is in search/<db>
    shutil.rmtree(archive, ignore_errors=True)
    async with (
        EmbeddedMongo(settings.data, cache_size_gb=settings.cache_size_gb) as mongo,
        open_database(mongo.uri, name=DATABASE, timeout=timedelta(hours=1)) as database,
    ):
        machine["mongod"] = (await database.client.server_info())["version"]
        load_seconds: float | None = None
        if keep:
            kept = json.loads(loaded.read_text())
            words, terms_bytes = kept["words"], kept["terms_bytes"]
        else:
            started = time.perf_counter()
            words, terms_bytes = await load(settings)
            load_seconds = time.perf_counter() - started
            print(f"loaded {settings.messages:,} messages in {load_seconds:.0f}s", flush=True)
            loaded.write_text(json.dumps({"words": words, "terms_bytes": terms_bytes,
                                          **_data_of(settings)}))  # fmt: skip
        messages = await Message.get_pymongo_collection().count_documents({})
        builds = {"text": await build_text(database, messages)}
        print(f"$text index: {builds['text']}", flush=True)
        builds["term_arrays"] = await build_term_arrays(database, messages, terms_bytes)
        print(f"term arrays: {builds['term_arrays']}", flush=True)
        index = SearchIndex(archive / "search", DATABASE)
        async with following(index):
            seconds = await rebuilt(index, messages)
            await index.sync(timeout=120)
            builds["tantivy"] = Build(
                seconds,
                folder_mb(index.path),
                messages / seconds,
                "its rebuild from MongoDB (read, analyse, write)",
            )
            print(f"tantivy: {builds['tantivy']}", flush=True)
            engines: list[Engine] = [Tantivy(index), MongoText(), TermArrays()]
            for engine in engines:  # first calls (connections, analyzers) out of the figures
                await engine.run(Sample(words[500], None), Order.RELEVANCE)
            cells, agreement = await measure(engines, samples(settings, words), settings)
            # Kept at once: the purge below comes after the longest part of the run.
            (OUT / "search-cells.json").write_text(json.dumps([c.summary() for c in cells]))
            purge = await purge_one(database, index, engines, words, settings)
            print(f"purge: {purge}", flush=True)
        after_merges = folder_mb(index.path)
        builds["tantivy"].note += f"; {after_merges:,.0f} MB once its merges ended"
    machine["load_after"] = os.getloadavg()
    report = Report(
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        machine=machine, load_seconds=load_seconds, builds=builds,
        cells=[c.summary() for c in cells],
        agreement={n: [agreement.same[n], agreement.compared[n]] for n in agreement.compared},
        purge=purge,
    )  # fmt: skip
    write(report)
    return report


def _data_of(settings: Settings) -> dict[str, Any]:
    return {"messages": settings.messages, "accounts": settings.accounts, "seed": settings.seed}


def _same_data(loaded: Path, settings: Settings) -> bool:
    kept = json.loads(loaded.read_text())
    return all(kept.get(k) == v for k, v in _data_of(settings).items())


# --- the tables -----------------------------------------------------------------------------


def markdown(report: Report) -> str:
    s = report.settings
    names = list(ENGINES)
    head = "| scope | order | query | " + " | ".join(f"{ENGINES[n]} p50 / p95" for n in names)
    lines = [head + " |", "| --- | --- | --- |" + " ---: |" * len(names)]
    by_key = {(c["engine"], c["scope"], c["order"], c["kind"]): c for c in report.cells}
    for scope in SCOPES:
        for order in (o.value for o in (Order.RELEVANCE, Order.NEWEST)):
            for kind in KINDS:
                cells = [by_key[n, scope, order, kind] for n in names]
                lines.append(
                    f"| {scope} | {order} | {kind} | "
                    + " | ".join(_latency(c, s["repeats"]) for c in cells)
                    + " |"
                )
    lines += ["", "| | " + " | ".join(ENGINES[n] for n in names) + " |",
              "| --- |" + " ---: |" * len(names)]  # fmt: skip
    for scope in SCOPES:
        worst = [report.worst(scope, n) for n in names]
        lines.append(f"| worst p95, {scope} | "
                     + " | ".join(f"{w['p95_ms']:,.1f} ms ({w['kind']}, {w['order']})"
                                  for w in worst) + " |")  # fmt: skip
    b = report.builds
    lines.append(
        "| index build | "
        + " | ".join(f"{b[n].seconds:,.0f} s ({b[n].rate:,.0f} msg/s)" for n in names)
        + " |"
    )
    lines.append(
        "| index size on disk | " + " | ".join(f"{b[n].size_mb:,.0f} MB" for n in names) + " |"
    )
    p = report.purge
    immediate = "immediate (the index is the collection's)"
    lines.append(f"| erased account gone from results | hidden from agents in "
                 f"{p['hidden_from_agents_s']:.2f} s; gone from the index "
                 f"{p['gone_from_index_s']:.2f} s after the sweep began (sweep "
                 f"{p['sweep_s']:.1f} s) | {immediate} | {immediate} |")  # fmt: skip
    m = report.machine
    agreed = ", ".join(f"{ENGINES[n]} {a}/{t}" for n, (a, t) in report.agreement.items())
    note = (f"{s['messages']:,} messages of {WORDS_PER_MESSAGE} words (Zipf, "
            f"{VOCABULARY:,}-word vocabulary), {s['accounts']:,} accounts; {s['repeats']} "
            f"queries per kind (fewer where marked n: the cell's {s['budget']:.0f} s budget "
            f"ran out); p50 / p95 in ms, first page of {LIMIT} with snippets. MongoDB "
            f"{m.get('mongod')}, WiredTiger cache {s['cache_size_gb']:g} GB; {m['cores']} "
            f"cores, load average {m['load_before'][0]:.1f} before, "
            f"{m['load_after'][0]:.1f} after. `from:` and `after:` reach the peers as the "
            "filters their searches had (participants, sent_at). Newest-first pages identical "
            f"to tantivy's: {agreed}.")  # fmt: skip
    lines += ["", textwrap.fill(note, 100, break_on_hyphens=False, break_long_words=False)]
    return "\n".join(lines)


def _latency(cell: dict[str, Any], repeats: int) -> str:
    n = "" if cell["n"] >= repeats else f" (n={cell['n']})"
    return f"{cell['p50_ms']:,.1f} / {cell['p95_ms']:,.1f}{n}"


def read(path: Path) -> Report:
    """A report written by ``write``."""
    data = json.loads(path.read_text())
    data["builds"] = {name: Build(**b) for name, b in data["builds"].items()}
    return Report(**data)


def write(report: Report) -> None:
    data = asdict(report)
    (OUT / "search.json").write_text(json.dumps(data, indent=1, default=str))
    table = markdown(report)
    (OUT / "search.md").write_text(table + "\n")
    print("\n" + table, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=Settings.messages)
    parser.add_argument("--accounts", type=int, default=Settings.accounts)
    parser.add_argument("--repeats", type=int, default=Settings.repeats, help="queries per kind")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument(
        "--budget",
        type=float,
        default=Settings.budget,
        help="seconds of queries per engine and cell (default %(default)s)",
    )
    parser.add_argument("--data", type=Path, default=Settings.data)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse the loaded messages of an earlier run of the same size",
    )
    parser.add_argument(
        "--tables",
        action="store_true",
        help="only print the tables of the last run (bench/out/search.json)",
    )
    args = parser.parse_args()
    if args.tables:
        print(markdown(read(OUT / "search.json")))
        return
    del args.tables
    asyncio.run(run(Settings(**vars(args))))


if __name__ == "__main__":
    main()
