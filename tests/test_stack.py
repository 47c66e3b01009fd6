"""scripts/stack.sh reports a port that is already taken, and starts nothing then."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_taken_port_is_reported_clearly(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {**os.environ, "HDH_STATE_DIR": str(tmp_path), "HDH_AZURITE_PORT": str(port)}
        result = subprocess.run(
            ["bash", str(ROOT / "scripts" / "stack.sh"), "start"], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1
    assert f"port {port} for azurite is already taken" in result.stderr
    assert "HDH_AZURITE_PORT" in result.stderr
    assert not (tmp_path / "stack" / "azurite.pid").exists()


def test_status_of_a_stopped_stack(tmp_path):
    env = {**os.environ, "HDH_STATE_DIR": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "stack.sh"), "status"], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["azurite: stopped", "seaweedfs: stopped"]


def test_start_is_safe_to_call_twice():
    """`make test` started the stack: starting it again changes nothing and says so."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "stack.sh"), "start"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "azurite: already running" in result.stdout
    assert "seaweedfs: already running" in result.stdout
