"""Job claims: one winner per job, stale claims recovered once, fresh claims never taken."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from vlm.claims import HOST, Claim, Claims

KEY = "0123456789abcdef"


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant(claims: Claims, claim: Claim, age_s: float = 0.0) -> None:
    """Write `claim` as if its worker had, its heartbeat `age_s` seconds old."""
    claims.path(claim.key).write_text(claim.to_json())
    if age_s:
        old = time.time() - age_s
        os.utime(claims.path(claim.key), (old, old))


CONTENDER = """
import os, sys, time
from pathlib import Path
from vlm.claims import Claims
runs = Path(sys.argv[1])
(runs / f"ready-{os.getpid()}").touch()
while not (runs / "go").exists():
    time.sleep(0.001)
won = Claims(runs).try_claim(sys.argv[2], "job") is not None
print(os.getpid(), int(won), flush=True)
while not (runs / "end").exists():  # stay alive until all have tried: a dead winner's claim would be stale
    time.sleep(0.01)
"""


def contend(runs, n: int = 4) -> list[tuple[int, bool]]:
    """`n` processes try to claim KEY at the same moment; (pid, won) of each."""
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(runs), KEY], stdout=subprocess.PIPE, text=True)
             for _ in range(n)]
    while len(list(runs.glob("ready-*"))) < n:
        time.sleep(0.01)
    (runs / "go").touch()
    try:
        lines = [p.stdout.readline().split() for p in procs]
    finally:
        (runs / "end").touch()
        for p in procs:
            p.wait(timeout=60)
    return [(int(pid), won == "1") for pid, won in lines]


def test_one_of_two_claimers_wins(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    mine = a.try_claim(KEY, "job", session="s", worker="0")
    assert mine is not None and mine.pid == os.getpid() and mine.host == HOST
    assert b.try_claim(KEY, "job") is None
    assert a.read(KEY).token == mine.token and a.read(KEY).state == "running"


def test_concurrent_claimers_one_wins(tmp_path):
    results = contend(tmp_path)
    winners = [pid for pid, won in results if won]
    assert len(winners) == 1 and Claims(tmp_path).read(KEY).pid == winners[0]


def test_concurrent_recoverers_of_a_stale_claim_one_wins(tmp_path):
    claims = Claims(tmp_path)
    plant(claims, Claim(KEY, state="running", host=HOST, pid=dead_pid(), token="dead", run_dir="/r/x"))
    results = contend(tmp_path)
    winners = [pid for pid, won in results if won]
    assert len(winners) == 1
    now = claims.read(KEY)
    assert now.pid == winners[0] and now.attempt == 2 and now.crashes == 1 and now.run_dir == "/r/x"


def test_stale_claims_are_recovered(tmp_path):
    claims = Claims(tmp_path, stale_after_s=60)
    plant(claims, Claim(KEY, host=HOST, pid=dead_pid(), token="dead"))  # same host, pid gone: at once
    assert claims.try_claim(KEY) is not None
    plant(claims, Claim(KEY, host="other-host", pid=1, token="far"), age_s=120)  # no heartbeat for 2 min
    assert claims.try_claim(KEY) is not None
    plant(claims, Claim(KEY, state="interrupted", host=HOST, pid=os.getpid(), token="ctrl-c"))
    assert claims.try_claim(KEY) is not None
    claims.path(KEY).write_text("")  # a creator that died before writing
    os.utime(claims.path(KEY), (time.time() - 120,) * 2)
    assert claims.try_claim(KEY) is not None


@pytest.mark.parametrize("claim,age_s", [
    (Claim(KEY, host=HOST, pid=os.getpid(), token="live"), 0),  # this process: alive
    (Claim(KEY, host=HOST, pid=os.getpid(), token="live"), 30),  # alive, heartbeat within the timeout
    (Claim(KEY, host="other-host", pid=1, token="far"), 10),  # another host, recent heartbeat
    (Claim(KEY, state="done", host="other-host", pid=1, token="d"), 1000),
    (Claim(KEY, state="failed", host="other-host", pid=1, token="f"), 1000),
])
def test_fresh_done_and_failed_claims_are_not_taken(tmp_path, claim, age_s):
    claims = Claims(tmp_path, stale_after_s=60)
    plant(claims, claim, age_s)
    assert claims.try_claim(KEY) is None
    assert claims.read(KEY).token == claim.token


def test_a_claim_being_written_is_fresh(tmp_path):
    claims = Claims(tmp_path, stale_after_s=60)
    claims.path(KEY).write_text("")  # created with O_EXCL, content not written yet
    assert claims.try_claim(KEY) is None


def test_lost_claims_cannot_be_changed_by_their_old_owner(tmp_path):
    claims = Claims(tmp_path)
    old = Claim(KEY, host=HOST, pid=dead_pid(), token="dead")
    plant(claims, old)
    new = claims.try_claim(KEY)
    assert claims.update(old, state="done") is None and not claims.release(old) and not claims.touch(old)
    assert claims.read(KEY).token == new.token and claims.read(KEY).state == "running"
    assert claims.update(new, state="done").state == "done"


def test_heartbeat_refreshes_the_mtime(tmp_path):
    claims = Claims(tmp_path, stale_after_s=60)
    mine = claims.try_claim(KEY)
    os.utime(claims.path(KEY), (time.time() - 120,) * 2)
    assert claims.touch(mine)
    assert time.time() - claims.read(KEY).mtime < 30


def test_a_job_that_keeps_killing_its_worker_fails(tmp_path):
    claims = Claims(tmp_path, max_crashes=3)
    plant(claims, Claim(KEY, host=HOST, pid=dead_pid(), token="dead", crashes=2))
    assert claims.try_claim(KEY) is None
    failed = claims.read(KEY)
    assert failed.state == "failed" and "died 3 times" in failed.error


def test_reset_clears_failed_and_lost_done_claims(tmp_path):
    claims = Claims(tmp_path)
    base = Claim(KEY, host="h", pid=1, token="t")
    plant(claims, replace(base, key="a" * 16, state="failed"))
    plant(claims, replace(base, key="b" * 16, state="done"))  # its record was deleted
    plant(claims, replace(base, key="c" * 16, state="done"))  # finished after the caller listed its pending jobs
    plant(claims, replace(base, key="d" * 16, state="running"))
    assert claims.reset([c * 16 for c in "abcd"], finished=lambda: {"c" * 16}) == ["a" * 16, "b" * 16]
    assert claims.read("c" * 16).state == "done" and claims.read("d" * 16).state == "running"
    calls = []
    claims.reset(["d" * 16], finished=lambda: calls.append(1) or set())
    assert calls == []  # records are listed only when a done claim needs the check
