"""Shared pieces of the fault drills (soak.py, disk_full.py): build the
daemon, start it the way a user does (a config file, `purgeq serve`), talk
to it over HTTP on loopback, and read what it stored with sqlite3.

Standard library only, so the drills run on a fresh machine with nothing
but python3.
"""

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build() -> Path:
    """Builds the release binary (incrementally) and returns its path."""
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "purgeq"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident set size of `pid`, in MB (from /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Http:
    """A tiny JSON client for one host:port."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.port = port
        self.timeout = timeout

    def call(self, method: str, path: str, body=None):
        """Returns (status, parsed JSON or None, headers); raises OSError
        when the connection fails."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            return response.status, parsed, dict(response.getheaders())
        except http.client.HTTPException as error:
            raise OSError(str(error)) from error
        finally:
            conn.close()

    def get(self, path: str):
        return self.call("GET", path)

    def post(self, path: str, body):
        return self.call("POST", path, body)


class Daemon:
    """`purgeq serve --config FILE`, with its log in the work directory."""

    def __init__(self, binary: Path, work: Path, config: str, port: int):
        self.binary = binary
        self.work = work
        self.config_path = work / "purgeq.toml"
        self.config_path.write_text(config)
        self.http = Http(port)
        self.process = None
        self.starts = 0

    def start(self, timeout: float = 30.0):
        self.starts += 1
        log = open(self.work / f"daemon-{self.starts}.log", "wb")
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited at start: {self.log_tail()}")
            try:
                if self.http.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not answer within {timeout}s: {self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.work.glob("daemon-*.log"))
        )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def stats(self) -> dict:
        return self.http.get("/v1/stats")[1] or {}


def integrity_check(db: Path) -> str:
    # closing(): sqlite3's own context manager ends the transaction but
    # leaves the file open (and a tmpfs busy).
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def history(db: Path) -> list:
    """Every URL every request asked for, with its final fate (the
    `history` view of the schema)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [
            dict(row)
            for row in conn.execute(
                "SELECT request_id, url, kind, state, effective_state, merged_into_url, "
                "last_error FROM history"
            )
        ]
