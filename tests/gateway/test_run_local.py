"""`make run` names a taken port and the setting that moves it, before starting anything."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check_ports(**settings) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings}
    return subprocess.run(
        [sys.executable, "scripts/run_local.py", "--check-ports"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_a_taken_gateway_port_is_named_with_its_setting():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = check_ports(GATEWAY_BIND=f"127.0.0.1:{port}", DEMO_PORT="0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Port {port} on 127.0.0.1 is taken (GATEWAY_BIND=127.0.0.1:{port}); "
        "pick another: GATEWAY_BIND=127.0.0.1:8100 make run"
    ]


def test_a_taken_demo_port_is_named_with_its_setting():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = check_ports(GATEWAY_BIND="127.0.0.1:0", DEMO_PORT=str(port))
    assert result.returncode == 1
    assert f"(DEMO_PORT={port}); pick another: DEMO_PORT=9100 make run" in result.stderr


def test_free_ports_pass_silently():
    result = check_ports(GATEWAY_BIND="127.0.0.1:0", DEMO_PORT="0")
    assert (result.returncode, result.stderr) == (0, "")


def test_a_port_set_in_the_dot_env_file_is_the_one_checked(tmp_path):
    """setup_demo reads DEMO_PORT from .env (the settings do); make run must start the demo there too."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        dot_env = tmp_path / ".env"
        dot_env.write_text(f"DEMO_PORT={port}\n")
        env = {k: v for k, v in os.environ.items() if k not in ("DEMO_PORT", "GATEWAY_BIND")}
        env.update(GATEWAY_DOT_ENV=str(dot_env), GATEWAY_BIND="127.0.0.1:0")
        result = subprocess.run(
            [sys.executable, "scripts/run_local.py", "--check-ports"], cwd=ROOT, env=env, capture_output=True, text=True
        )
    assert result.returncode == 1
    assert f"(DEMO_PORT={port})" in result.stderr
