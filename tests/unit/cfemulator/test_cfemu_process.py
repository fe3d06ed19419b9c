"""``python -m cfemulator`` as its own process: base URL on stdout, a bootstrap token, the control plane."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cfemulator.helpers import bearer

TESTS_DIR = Path(__file__).resolve().parents[2]


class Process:
    """The emulator subprocess, with its stdout lines collected by a reader thread (no blocking reads)."""

    def __init__(self, *args: str) -> None:
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cfemulator", *args],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def line(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from the emulator process within {timeout}s") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=20)
        self.reader.join(timeout=20)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def process() -> Iterator[Process]:
    proc = Process(
        "--port",
        "0",
        "--limit",
        "3",
        "--window",
        "60",
        "--block",
        "60",
        "--bootstrap",
        "Account API Tokens Write, Workers Scripts Read",
    )
    try:
        yield proc
    finally:
        proc.close()


def test_standalone_process(process: Process) -> None:
    base_url = process.line()
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/client/v4")
    seed = json.loads(process.line())
    account, token = seed["account_id"], seed["token"]
    origin = base_url.removesuffix("/client/v4")
    with httpx.Client(timeout=10) as http:
        verified = http.get(f"{base_url}/accounts/{account}/tokens/verify", headers=bearer(token))
        assert verified.json()["result"]["id"] == seed["token_id"]
        assert (
            http.get(f"{base_url}/accounts/{account}/workers/scripts", headers=bearer(token)).status_code
            == 200
        )

        other = http.post(f"{origin}/_emulator/accounts", json={"name": "second"}).json()["id"]
        minted = http.post(
            f"{origin}/_emulator/accounts/{other}/tokens", json={"permissions": ["D1 Write"]}
        ).json()
        assert (
            http.get(f"{base_url}/accounts/{other}/d1/database", headers=bearer(minted["value"])).status_code
            == 200
        )
        db = http.post(
            f"{base_url}/accounts/{other}/d1/database", json={"name": "d"}, headers=bearer(minted["value"])
        )
        logged = http.get(f"{origin}/_emulator/accounts/{other}/audit").json()  # the write, not the read
        assert [(e["actor"]["token_id"], e["resource"]["id"]) for e in logged] == [
            (minted["id"], db.json()["result"]["uuid"])
        ]
        assert http.put(f"{origin}/_emulator/faults", json={"audit_failures": True}).json()["audit_failures"]
        assert (
            http.post(
                f"{origin}/_emulator/accounts/{other}/tokens", json={"permissions": ["Nope"]}
            ).status_code
            == 404
        )

        statuses = [
            http.get(f"{base_url}/accounts/{account}/tokens", headers=bearer(token)).status_code
            for _ in range(2)
        ]
        assert statuses == [200, 429]  # --limit 3: the bootstrap token's 4th call is refused
        info = http.get(f"{origin}/_emulator/tokens/{seed['token_id']}").json()
        assert info["request_count"] == 4 and info["blocked_for"] > 0
        listed = http.get(f"{origin}/_emulator/accounts/{account}/tokens").json()
        assert [t["id"] for t in listed] == [seed["token_id"]]

        knobs = http.put(f"{origin}/_emulator/faults", json={"error_rate": 1.0}).json()
        assert knobs["error_rate"] == 1.0
        assert (
            http.get(f"{base_url}/accounts/{other}/d1/database", headers=bearer(minted["value"])).status_code
            == 500
        )
        recorded = http.get(f"{origin}/_emulator/requests").json()
        assert [r["status"] for r in recorded] == [200, 200, 200, 200, 200, 429, 500]

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(timeout=20) == 0
