#!/usr/bin/env python3
"""Disk-full drill: the database on a small tmpfs that fills up.

    sudo python3 scripts/disk_full.py

1. The daemon (built-in emulator, slow sending) gets a backlog of URLs.
2. A filler file takes every free byte of the tmpfs.
3. Intents are posted until one is refused: it must be a 503
   `StoreUnavailable` that says the disk is full, with `Retry-After`;
   /readyz must say why; the daemon must stay up and go on sending the
   backlog (the succeeded count keeps growing).
4. The filler is removed: intents are accepted again.
5. Everything accepted drains to `succeeded`; after SIGTERM,
   `PRAGMA integrity_check` is `ok` and every accepted URL is in the
   database.

Mounting needs root (or CAP_SYS_ADMIN); without it the drill says so and
exits 0 (skipped), so it can run anywhere.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drill  # noqa: E402

TMPFS_SIZE = "32m"
HOST = "www.example.com"  # served by the built-in emulator's demo endpoint


def config(mount: Path, work: Path, port: int) -> str:
    # Two calls a second of 20 URLs: a backlog of 1,000 takes ~25 s to send,
    # long enough to watch sending go on while the disk is full.
    return f"""
[store]
path = "{mount}/purgeq.db"
[ingest]
socket = "{work}/purgeq.sock"
http = "127.0.0.1:{port}"
[batch]
max_files = 20
linger = "200ms"
[sender]
requests_per_second = 2.0
burst = 1
concurrency = 2
[tracker]
poll_interval = "1s"
[quota]
files_per_day = 1000000
[log]
level = "info"
"""


def fill(path: Path) -> int:
    """Writes `path` until the file system is full; returns bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as filler:
        for chunk in (1 << 20, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += filler.write(block)
                except OSError:
                    break
    return written


def urls(start: int, count: int) -> list:
    return [f"http://{HOST}/drill/{i}.js" for i in range(start, start + count)]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="purgeq-disk-full-"))
    mount = work / "tmpfs"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        print(f"disk_full: skipped: cannot mount a tmpfs here ({mounted.stderr.strip()}); run as root")
        return 0

    binary = drill.build()
    port = drill.free_port()
    daemon = drill.Daemon(binary, work, config(mount, work, port), port)
    http = daemon.http
    accepted = {}  # request id -> urls
    problems = []
    next_url = 0

    def post(count: int):
        nonlocal next_url
        batch = urls(next_url, count)
        status, body, headers = http.post("/v1/purges", {"files": batch})
        if status == 202:
            accepted[body["id"]] = batch
            next_url += count
        return status, body, headers

    try:
        daemon.start()
        # 1. A backlog.
        for _ in range(20):
            assert post(50)[0] == 202
        backlog = sum(len(u) for u in accepted.values())

        # 2. Fill the disk.
        filler = mount / "filler"
        filled = fill(filler)

        # 3. Intents until refused.
        refused = None
        accepted_while_full = 0
        for _ in range(400):
            status, body, headers = post(50)
            if status == 202:
                accepted_while_full += 50
                continue
            refused = (status, body, headers)
            break
        if refused is None:
            problems.append("no intent was refused on a full disk")
        else:
            status, body, headers = refused
            error = (body or {}).get("error", {})
            if status != 503 or error.get("type") != "StoreUnavailable":
                problems.append(f"refused with {status} {body}, not 503 StoreUnavailable")
            if "full" not in error.get("message", ""):
                problems.append(f"the refusal does not say the disk is full: {error}")
            if "Retry-After" not in headers and "retry-after" not in headers:
                problems.append("the 503 has no Retry-After")
            print(f"disk_full: refused as expected: {status} {error.get('message')}")

        ready_status, ready, _ = http.get("/readyz")
        if ready_status != 503 or "full" not in (ready or {}).get("reason", ""):
            problems.append(f"/readyz while full: {ready_status} {ready}")
        else:
            print(f"disk_full: /readyz: {ready['reason']}")

        # Sending goes on while the disk is full.
        before = daemon.stats()["items"]["succeeded"]
        time.sleep(6)
        after = daemon.stats()["items"]["succeeded"]
        if not daemon.alive():
            problems.append("the daemon died on a full disk")
        if after <= before:
            problems.append(f"sending stopped on a full disk (succeeded {before} -> {after})")
        print(f"disk_full: while full, succeeded went {before} -> {after} in 6 s")

        # 4. Space again: accepted again (the first try may still meet a
        # full WAL; a client retries after Retry-After).
        filler.unlink()
        for _ in range(50):
            if post(50)[0] == 202:
                break
            time.sleep(0.2)
        else:
            problems.append("intents are still refused after space was freed")
        ready_status = http.get("/readyz")[0]
        if ready_status != 200:
            problems.append(f"/readyz after space was freed: {ready_status}")

        # 5. Drain, stop, check.
        deadline = time.monotonic() + 180
        total = sum(len(u) for u in accepted.values())
        while time.monotonic() < deadline:
            items = daemon.stats()["items"]
            if items["succeeded"] >= total:
                break
            time.sleep(0.5)
        code = daemon.terminate()
        if code != 0:
            problems.append(f"the daemon exited with {code} on SIGTERM")
    finally:
        if daemon.alive():
            daemon.kill9()

    db = mount / "purgeq.db"
    integrity = drill.integrity_check(db)
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    rows = {}
    for row in drill.history(db):
        rows.setdefault(row["request_id"], []).append(row)
    lost = 0
    for request_id, batch in accepted.items():
        stored = rows.get(request_id, [])
        not_done = [r for r in stored if r["effective_state"] != "succeeded"]
        lost += len(batch) - len(stored) + len(not_done)
    if lost:
        problems.append(f"{lost} accepted URLs missing or not succeeded")
    unmounted = subprocess.run(["umount", str(mount)], capture_output=True, text=True)
    if unmounted.returncode != 0:
        problems.append(f"cannot unmount {mount}: {unmounted.stderr.strip()}")

    total = sum(len(u) for u in accepted.values())
    print(
        f"disk_full: tmpfs {TMPFS_SIZE}, filler {filled / 1e6:.1f} MB; backlog {backlog} URLs, "
        f"{accepted_while_full} more accepted before the first refusal; "
        f"accepted in all {total}, succeeded {total - lost}, lost {lost}; integrity_check {integrity}"
    )
    for problem in problems:
        print(f"disk_full: PROBLEM: {problem}", file=sys.stderr)
    if problems:
        print(f"disk_full: FAILED; logs in {work}", file=sys.stderr)
        print(daemon.log_tail(40), file=sys.stderr)
        return 1
    print("disk_full: passed")
    return 0


if __name__ == "__main__":
    if os.name != "posix":
        print("disk_full: skipped: needs Linux")
        sys.exit(0)
    sys.exit(main())
