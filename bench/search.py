"""Search latency over a large archive: account-scoped and global, rare to common words.

    .venv/bin/python -m bench.search --messages 1000000 --accounts 10000

Loads messages of 40 words (Zipf-distributed vocabulary) straight into a fresh database with
the store's own document shape and indexes, then times ``store.search.search`` (the API's
search without HTTP and audit) for each kind of query, and prints p50/p95 per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import AsyncMongoClient
from tqdm import tqdm

from store.database import open_database
from store.documents import Message
from store.embedded import EmbeddedMongo
from store.search import Filters, Order, parse_query, search, terms_of

OUT = Path(__file__).parent / "out"
VOCABULARY = 50_000
WORDS_PER_MESSAGE = 40
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(4, 10))))
    return sorted(words, key=lambda w: (hash(w) % 1000, w))


def zipf_weights() -> list[float]:
    return [1.0 / rank for rank in range(1, VOCABULARY + 1)]


def make_message(
    rng: random.Random, words: list[str], cumulative: list[float], accounts: int, n: int
) -> dict[str, Any]:
    chosen = rng.choices(words, cum_weights=cumulative, k=WORDS_PER_MESSAGE)
    text = " ".join(chosen)
    subject = " ".join(chosen[:4])
    account = f"acct-{rng.randrange(accounts)}"
    sent = T0 + timedelta(seconds=n * 30 + rng.randrange(30))
    return {
        "_id": ObjectId(),
        "conversation_id": ObjectId(),
        "account_id": account,
        "channel": "chat" if n % 3 else "email",
        "direction": "inbound",
        "source": "bench",
        "dedup_key": f"bench:{n}",
        "external_id": str(n),
        "message_id_header": None,
        "in_reply_to": None,
        "references": [],
        "subject": subject,
        "author": {"role": "customer", "name": None, "email": f"{account}@example.com"},
        "sender": None,
        "to": [],
        "cc": [],
        "participants": [f"{account}@example.com"],
        "sent_at": sent,
        "collected_at": sent,
        "text": text,
        "html": None,
        "body_truncated": False,
        "search_terms": terms_of(subject, text),
        "attachments": [],
        "has_attachments": False,
        "restricted": False,
        "raw": None,
        "envelope": None,
        "parse_error": None,
        "history": [],
    }


async def load(messages: int, accounts: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = vocabulary(rng)
    cumulative: list[float] = []
    total = 0.0
    for weight in zipf_weights():
        total += weight
        cumulative.append(total)
    collection = Message.get_pymongo_collection().with_options(write_concern=None)
    batch: list[dict[str, Any]] = []
    with tqdm(total=messages, unit="msg", desc="loading") as bar:
        for n in range(messages):
            batch.append(make_message(rng, words, cumulative, accounts, n))
            if len(batch) == 5000:
                await collection.insert_many(batch, ordered=False)
                bar.update(len(batch))
                batch = []
        if batch:
            await collection.insert_many(batch, ordered=False)
            bar.update(len(batch))
    return words


QUERIES = {
    "rare word": lambda w, r: w[r.randrange(30_000, VOCABULARY)],
    "medium word": lambda w, r: w[r.randrange(300, 1_000)],
    "common word": lambda w, r: w[r.randrange(0, 10)],
    "two words": lambda w, r: f"{w[r.randrange(0, 50)]} {w[r.randrange(50, 500)]}",
    "phrase": lambda w, r: f'"{w[r.randrange(0, 20)]} {w[r.randrange(0, 20)]}"',
}


async def measure(words: list[str], accounts: int, repeats: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    rows = []
    for scope in ("account", "global"):
        for order in (Order.RELEVANCE, Order.NEWEST):
            for kind, make in QUERIES.items():
                times = []
                for _ in range(repeats):
                    q = make(words, rng)
                    account = f"acct-{rng.randrange(accounts)}" if scope == "account" else None
                    started = time.perf_counter()
                    await search(
                        text=parse_query(q),
                        filters=Filters(account_id=account, hide_restricted=True),
                        order=order,
                        limit=20,
                        after=None,
                    )
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                rows.append({
                    "scope": scope, "order": order.value, "query": kind,
                    "p50_ms": round(statistics.median(times), 2),
                    "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
                })  # fmt: skip
                print(f"{scope:8} {order.value:10} {kind:12} p50 {rows[-1]['p50_ms']:8.2f} ms"
                      f"   p95 {rows[-1]['p95_ms']:8.2f} ms", flush=True)  # fmt: skip
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=40, help="queries per kind")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="reuse a loaded bench/out/search-db")
    args = parser.parse_args()
    data = OUT / "search-db"
    loaded = args.keep and (data / "loaded.json").exists()
    async with EmbeddedMongo(data, cache_size_gb=4) as mongo:
        if not loaded:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.uri)
            await client.drop_database("bench_search")
            await client.close()
        async with open_database(mongo.uri, name="bench_search", timeout=timedelta(seconds=120)):
            if loaded:
                words = json.loads((data / "loaded.json").read_text())["words"]
            else:
                started = time.perf_counter()
                words = await load(args.messages, args.accounts, args.seed)
                print(f"loaded {args.messages:,} messages in {time.perf_counter() - started:.0f}s")
                (data / "loaded.json").write_text(json.dumps({"words": words, **vars(args)}))
            rows = await measure(words, args.accounts, args.repeats, args.seed)
    (OUT / "search.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
