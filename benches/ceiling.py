"""The ceiling for the ingest benchmark: the same rows as a 1,000-URL
request inserted straight into purgeq's schema with plain SQLite (Python's
sqlite3, C speed per row), one transaction per 1,000 URLs,
synchronous=FULL in WAL mode. Prints URLs/s.

usage: python3 benches/ceiling.py MIGRATION.sql TOTAL_URLS
"""
import os
import sqlite3
import sys
import tempfile
import time

migration, total = sys.argv[1], int(sys.argv[2])
with tempfile.TemporaryDirectory() as directory:
    db = sqlite3.connect(os.path.join(directory, "ceiling.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(open(migration).read())
    now = "2026-11-24T00:00:00.000Z"
    started = time.perf_counter()
    for r in range(total // 1000):
        request_id = f"req-{r}"
        db.execute("BEGIN")
        db.execute("INSERT INTO requests (id, received_at, source) VALUES (?, ?, 'bench')", (request_id, now))
        for position in range(1000):
            i = r * 1000 + position
            url = f"http://bench.example.com/ceiling/{i % 97}/{i}.js"
            item_id = db.execute(
                "INSERT INTO items (endpoint_id, kind, url, state, not_before, created_at, updated_at) "
                "VALUES ('bench', 'file', ?, 'pending', ?, ?, ?) RETURNING id",
                (url, now, now, now),
            ).fetchone()[0]
            db.execute(
                "INSERT INTO request_items (request_id, item_id, position) VALUES (?, ?, ?)",
                (request_id, item_id, position),
            )
        db.execute("COMMIT")
    print(f"{total / (time.perf_counter() - started):.0f}")
