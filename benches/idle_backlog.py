#!/usr/bin/env python3
"""Idle CPU of a daemon whose backlog waits for the next quota day (issue 31).

Starts `purgeq serve` (the built-in emulator, a 10-file / 1-directory day),
posts PENDING URLs in requests of 1,000, waits until the day is spent and
nothing is under way, then samples the process's CPU time (utime + stime in
/proc/PID/stat) over SECONDS. A backlog that cannot move should cost
nothing.

    cargo build --release
    python3 benches/idle_backlog.py [--binary target/release/purgeq]
        [--pending 100000] [--seconds 15]

Prints one line: pending, CPU seconds over the window, percent of one core,
RSS. Run it beside the previous commit's binary in the same session
(BENCHMARKS.md says how).
"""

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


def post(base, urls):
    body = json.dumps({"urls": urls}).encode()
    request = urllib.request.Request(
        base + "/v1/purges", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        assert r.status == 202, r.status


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/purgeq")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--windows", type=int, default=1,
                        help="measure this many windows in a row; the last is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as dir:
        port = free_port()
        config = os.path.join(dir, "purgeq.toml")
        with open(config, "w") as f:
            f.write(
                f'[store]\npath = "{dir}/purgeq.db"\n'
                f'[ingest]\nsocket = ""\nhttp = "127.0.0.1:{port}"\nmax_pending = 0\n'
                '[quota]\nfiles_per_day = 10\ndirectories_per_day = 1\n'
                '[log]\nlevel = "warn"\n'
            )
        daemon = subprocess.Popen(
            [args.binary, "serve", "--config", config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    get(base, "/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            for start in range(0, args.pending, 1000):
                count = min(1000, args.pending - start)
                post(
                    base,
                    [
                        f"http://www.example.com/d{(start + i) % 500}/f{start + i}.js"
                        for i in range(count)
                    ],
                )
            # Spent and settled: nothing under way, the planner's own
            # promotion done.
            deadline = time.time() + 300
            while time.time() < deadline:
                stats = get(base, "/v1/stats")
                quota = stats.get("quota") or {}
                if (
                    quota.get("files_left") == 0
                    and quota.get("directories_left") == 0
                    and quota.get("files_reserved") == 0
                    and quota.get("directories_reserved") == 0
                ):
                    break
                time.sleep(1)
            time.sleep(10)
            for window in range(args.windows - 1):
                before = cpu_seconds(daemon.pid)
                time.sleep(args.seconds)
                print(f"  window {window + 1}: {cpu_seconds(daemon.pid) - before:.2f} s")
            before = cpu_seconds(daemon.pid)
            time.sleep(args.seconds)
            used = cpu_seconds(daemon.pid) - before
            print(
                f"pending {args.pending}: {used:.2f} s CPU over {args.seconds:.0f} s "
                f"({100 * used / args.seconds:.1f} % of a core), RSS {rss_mb(daemon.pid):.1f} MB"
            )
        finally:
            daemon.terminate()
            daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
