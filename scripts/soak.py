#!/usr/bin/env python3
"""Soak: the daemon against a misbehaving CDN, killed at random, for a while.

    python3 scripts/soak.py                      # 10 minutes
    python3 scripts/soak.py --minutes 1 --kill-every 20   # what CI runs

The CDN is `purgeq emulate` in its own process, with a rate limit below the
daemon's own (so it throttles), 10 % of calls answered with an HTML 500 or
503, and URLs containing "always-fail" reported Failed. A feeder posts a
steady stream of intents (files, some directories, duplicates); like a
deploy script it re-posts any intent that got no 202. The daemon is killed
with SIGKILL at random intervals and started again, as systemd would.

At the end the feeder stops, the daemon drains its queue and is stopped
with SIGTERM, and the database is checked against what was accepted and
against the emulator's journal:

- every URL of every 202 is in the database, in a final state:
  `succeeded` (and the CDN really received it, or the directory it was
  merged into), or `failed` with a recorded reason;
- `PRAGMA integrity_check` is `ok`.

It prints the counts and the daemon's RSS at the start and end of each
life, and exits non-zero if a URL was lost or a check failed.
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drill  # noqa: E402

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
KEY_ID = "emulator-key-id"
KEY_VALUE = "soak-key-value"
ENDPOINTS = {"soak-a": "a.soak.example.com", "soak-b": "b.soak.example.com"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to feed (default 10)")
    parser.add_argument(
        "--kill-every",
        type=float,
        default=120.0,
        help="mean seconds between kill -9 (each interval is random, 0.5x to 1.5x; default 120)",
    )
    parser.add_argument("--rate", type=float, default=10.0, help="intents posted per second (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the queue to empty")
    return parser.parse_args()


class Feeder(threading.Thread):
    """Posts intents at a steady rate; keeps what was accepted, re-posts
    what was not (refused with 503 or no answer)."""

    def __init__(self, http: drill.Http, rate: float, rng: random.Random):
        super().__init__(daemon=True)
        self.http = http
        self.rate = rate
        self.rng = rng
        self.stop = threading.Event()
        self.accepted = {}  # request id -> list of (url, kind)
        self.retry = []
        self.counts = {"posted": 0, "accepted": 0, "refused_503": 0, "no_answer": 0, "other": 0}

    def intent(self):
        host = self.rng.choice(list(ENDPOINTS.values()))
        files = []
        for _ in range(self.rng.randint(1, 8)):
            # A few thousand paths: duplicates happen, and are coalesced.
            name = f"f{self.rng.randint(0, 3000)}.js"
            if self.rng.random() < 0.02:
                name = f"always-fail-{self.rng.randint(0, 50)}.css"
            files.append(f"http://{host}/d{self.rng.randint(0, 40)}/{name}")
        directories = []
        if self.rng.random() < 0.05:
            directories.append(f"http://{host}/d{self.rng.randint(0, 40)}/")
        return {"files": files, "directories": directories}

    def post(self, body):
        self.counts["posted"] += 1
        try:
            status, answer, _ = self.http.post("/v1/purges", body)
        except OSError:
            self.counts["no_answer"] += 1
            return False
        if status == 202:
            self.counts["accepted"] += 1
            urls = [(u, "file") for u in body["files"]] + [(u, "directory") for u in body["directories"]]
            self.accepted[answer["id"]] = urls
            return True
        self.counts["refused_503" if status == 503 else "other"] += 1
        if status != 503:
            print(f"soak: unexpected {status}: {answer}", file=sys.stderr)
        return False

    def run(self):
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop.is_set():
            body = self.retry.pop(0) if self.retry else self.intent()
            if not self.post(body):
                self.retry.append(body)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


class RssSampler(threading.Thread):
    """Samples the daemon's RSS at a fixed interval, across restarts, so a
    leak shows as a trend rather than hiding between two readings."""

    def __init__(self, daemon: drill.Daemon, every: float):
        super().__init__(daemon=True)
        self.target = daemon
        self.every = every
        self.stop = threading.Event()
        self.samples = []  # (seconds since start, MB)
        self.started = time.monotonic()

    def run(self):
        while not self.stop.wait(self.every):
            try:
                self.samples.append((time.monotonic() - self.started, self.target.rss_mb()))
            except (OSError, AttributeError):
                pass  # between a kill and the restart


def start_emulator(binary: Path, work: Path, port: int):
    args = [
        str(binary), "emulate", "--listen", f"127.0.0.1:{port}",
        "--subscription", SUBSCRIPTION, "--key-id", KEY_ID,
        "--requests-per-second", "4", "--burst", "4",
        "--error-500-rate", "0.05", "--error-503-rate", "0.05",
        "--completion-delay", "1s",
        "--fail-urls-containing", "always-fail",
        "--files-per-day", "100000000", "--directories-per-day", "100000000",
    ]
    for eid, host in ENDPOINTS.items():
        args += ["--endpoint", f"{eid}={host}"]
    env = dict(os.environ, PURGEQ_EMULATOR_KEY_VALUE=KEY_VALUE)
    log = open(work / "emulator.log", "wb")
    process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    http = drill.Http(port)
    for _ in range(200):
        try:
            if http.get("/_emulator/stats")[0] == 200:
                return process, http
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the emulator did not start")


def daemon_config(work: Path, port: int, emulator_port: int) -> str:
    text = f"""
[store]
path = "{work}/purgeq.db"
[ingest]
socket = "{work}/purgeq.sock"
http = "127.0.0.1:{port}"
[cdn]
base_url = "http://127.0.0.1:{emulator_port}"
subscription_id = "{SUBSCRIPTION}"
key_id = "{KEY_ID}"
key_value = "{KEY_VALUE}"
request_timeout = "2s"
connect_timeout = "1s"
[batch]
max_files = 50
linger = "300ms"
[sender]
requests_per_second = 6.0
burst = 6
concurrency = 4
max_attempts = 3
[tracker]
poll_interval = "1s"
[quota]
files_per_day = 100000000
directories_per_day = 100000000
[log]
level = "info"
"""
    for eid, host in ENDPOINTS.items():
        text += f'[[cdn.endpoints]]\nid = "{eid}"\nhosts = ["{host}"]\n'
    return text


def unfinished(stats: dict) -> int:
    items = stats.get("items", {})
    return sum(items.get(s, 0) for s in ("pending", "sending", "submitted"))


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    binary = drill.build()
    work = Path(tempfile.mkdtemp(prefix="purgeq-soak-"))
    print(f"soak: {args.minutes} min, kill -9 every ~{args.kill_every:.0f} s, {args.rate}/s, seed {seed}, work {work}")

    emulator, emulator_http = start_emulator(binary, work, drill.free_port())
    port = drill.free_port()
    daemon = drill.Daemon(binary, work, daemon_config(work, port, emulator_http.port), port)
    lives = []  # (rss at start, rss at end) per daemon life
    problems = []
    try:
        daemon.start()
        time.sleep(2)
        rss_start = daemon.rss_mb()
        feeder = Feeder(daemon.http, args.rate, rng)
        feeder.start()
        sampler = RssSampler(daemon, every=max(5.0, args.minutes * 60 / 20))
        sampler.start()

        end = time.monotonic() + args.minutes * 60
        kills = 0
        while time.monotonic() < end:
            wait = args.kill_every * rng.uniform(0.5, 1.5)
            if time.monotonic() + wait >= end:
                time.sleep(max(0.0, end - time.monotonic()))
                break
            time.sleep(wait)
            lives.append((rss_start, daemon.rss_mb()))
            daemon.kill9()
            kills += 1
            time.sleep(rng.uniform(0.5, 2.0))  # systemd's RestartSec
            daemon.start()
            time.sleep(2)
            rss_start = daemon.rss_mb()

        feeder.stop.set()
        feeder.join()
        sampler.stop.set()
        # Intents still unacknowledged are posted until accepted.
        for body in feeder.retry:
            for _ in range(100):
                if feeder.post(body):
                    break
                time.sleep(0.2)
            else:
                problems.append(f"an intent was never accepted: {body}")

        drain_deadline = time.monotonic() + args.drain_timeout
        while unfinished(daemon.stats()) and time.monotonic() < drain_deadline:
            time.sleep(0.5)
        stats = daemon.stats()
        if unfinished(stats):
            problems.append(f"the queue did not drain in {args.drain_timeout}s: {stats.get('items')}")
        lives.append((rss_start, daemon.rss_mb()))
        code = daemon.terminate()
        if code != 0:
            problems.append(f"the daemon exited with {code} on SIGTERM")

        journal = emulator_http.get("/_emulator/journal")[1] or []
        emulator_stats = emulator_http.get("/_emulator/stats")[1] or {}
    finally:
        if daemon.alive():
            daemon.kill9()
        emulator.terminate()
        emulator.wait()

    db = work / "purgeq.db"
    integrity = drill.integrity_check(db)
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")

    sent = set()
    for entry in journal:
        sent.update(entry["files"])
        sent.update(entry["directories"])
    rows = {}
    for row in drill.history(db):
        rows.setdefault(row["request_id"], []).append(row)

    urls = succeeded = failed = lost = 0
    for request_id, asked in feeder.accepted.items():
        stored = rows.get(request_id, [])
        urls += len(asked)
        if len(stored) != len(asked):
            lost += len(asked) - len(stored)
            problems.append(f"request {request_id}: {len(asked)} URLs accepted, {len(stored)} stored")
        for row in stored:
            state = row["effective_state"]
            if state == "succeeded":
                succeeded += 1
                reached = row["merged_into_url"] or row["url"]
                if reached not in sent:
                    problems.append(f"{row['url']} is succeeded but the CDN never received {reached}")
            elif state == "failed" and row["last_error"]:
                failed += 1
                if "always-fail" not in row["url"]:
                    problems.append(f"{row['url']} failed: {row['last_error']}")
            else:
                lost += 1
                problems.append(f"{row['url']} ended {state!r} (error {row['last_error']!r})")

    faults = emulator_stats.get("fault_500", 0) + emulator_stats.get("fault_503", 0)
    throttled = emulator_stats.get("RequestThrottled", 0)
    calls = sum(v for k, v in emulator_stats.items() if k not in ("fault_malformed", "fault_slow"))
    print(f"soak: intents posted {feeder.counts['posted']}, accepted {feeder.counts['accepted']}, "
          f"refused 503 {feeder.counts['refused_503']}, no answer (daemon down) {feeder.counts['no_answer']}")
    print(f"soak: URLs accepted {urls}: succeeded {succeeded}, failed with a reason {failed}, lost {lost}")
    print(f"soak: kill -9 {kills} times; CDN calls {calls}: "
          f"throttled {throttled}, HTML 500/503 injected {faults}; "
          f"purges journaled {len(journal)}")
    for n, (start, end_rss) in enumerate(lives, 1):
        print(f"soak: daemon life {n}: RSS {start:.1f} MB at start, {end_rss:.1f} MB at end")
    series = ", ".join(f"{t:.0f}s {mb:.1f}" for t, mb in sampler.samples)
    print(f"soak: RSS (MB) while feeding: {series}")
    print(f"soak: integrity_check {integrity}; emulator stats {emulator_stats}")
    for problem in problems[:20]:
        print(f"soak: PROBLEM: {problem}", file=sys.stderr)
    if problems:
        print(f"soak: FAILED with {len(problems)} problems; logs in {work}", file=sys.stderr)
        return 1
    print("soak: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
