"""`pgshroud demo` end to end: the installed console script, a real psql."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pgshroud() -> list[str]:
    script = shutil.which("pgshroud", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "pgshroud.proxy.commands.cli"]


def test_demo_serves_the_dataset_and_cleans_up(tmp_path):
    port = _free_port()
    demo = subprocess.Popen(
        [*_pgshroud(), "demo", "--port", str(port), "--patients", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line or demo.poll() is None, demo.stderr.read()
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        commands = dict(re.findall(rf"^\s+(admin|clinician|analyst)\s+psql \"(postgresql://[^\"]+:{port}/health)\"", text, re.MULTILINE))
        assert set(commands) == {"admin", "clinician", "analyst"}, text
        direct = re.search(r"Direct to PostgreSQL on ([\d.]+):(\d+)", text)
        assert direct, text
        counts = subprocess.run(
            ["psql", "-X", "-A", "-t", commands["clinician"], "-c",
             "select (select count(*) from patients), (select count(*) from diagnoses) > 0"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert counts.returncode == 0, counts.stderr
        assert counts.stdout.strip() == "300|t"
        wrong = subprocess.run(
            ["psql", "-X", commands["analyst"].replace("analyst:analyst@", "analyst:nope@"), "-c", "select 1"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    finally:
        demo.send_signal(signal.SIGINT)
        _, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 0, stderr
    # The throwaway cluster is gone: nothing listens on its port any more.
    with socket.socket() as sock:
        assert sock.connect_ex((direct.group(1), int(direct.group(2)))) != 0
