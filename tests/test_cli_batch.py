"""``chatlane batch`` interrupted mid-run and run again: every input answered exactly once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from test_cli import CLI, fake


def test_a_killed_batch_resumes_and_answers_every_input_exactly_once(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    n = 40
    rows = [
        {"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]}
        for i in range(n)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatlane",
            "batch",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "-j",
            "4",
            "--backend",
            fake("slow_echo"),
        ],
        env={**cli.env, "FAKE_DELAY": "0.04"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 8:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    first = out.read_text().splitlines()
    assert 8 <= len(first) < n, "the kill must land mid-run"

    again = cli("batch", "in.jsonl", "-o", "out.jsonl", "-j", "4", "--backend", fake("echo"))
    assert again.returncode == 0, again.stderr
    assert f"{len(first)} already done" in again.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in results]
    assert sorted(ids) == sorted(f"q{i}" for i in range(n))  # each exactly once
    assert len(ids) == len(set(ids))
    for r in results:
        assert r["response"]["message"]["content"] == f"echo: question {r['id'][1:]}"
    assert results[: len(first)] == [json.loads(line) for line in first]  # earlier lines kept

    db = sqlite3.connect(cli.db)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logged = db.execute("SELECT count(*) FROM calls").fetchone()[0]
    db.close()
    # Every answer is logged; a request killed after logging but before its line was written
    # ran again (at most one per worker).
    assert n <= logged <= n + 4


def test_progress_line_on_a_terminal_updates_in_place(tmp_path: Path) -> None:
    from chatlane.batch import BatchProgress
    from chatlane.cli import ProgressLine

    class Screen:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    screen = Screen()
    show = ProgressLine(screen, live=True)  # type: ignore[arg-type]
    progress = BatchProgress(
        total=10, skipped=2, done=5, failed=1, prompt_tokens=30, completion_tokens=12
    )
    show(progress, final=True)
    assert screen.text.startswith("\r[")
    assert "8/10 done, 1 failed" in screen.text
    assert "42 tokens" in screen.text
    assert "ETA " in screen.text
    assert screen.text.endswith("\x1b[K\n")


def test_ctrl_c_stops_a_batch_and_says_how_to_resume(tmp_path: Path) -> None:
    cli = CLI(tmp_path)
    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatlane",
            "batch",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "-j",
            "2",
            "--backend",
            fake("slow_echo"),
        ],
        env={**cli.env, "FAKE_DELAY": "0.05"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_text().count("\n") >= 3):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    kept = out.read_text().count("\n")
    assert f"interrupted with {kept} of 30 done" in err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
