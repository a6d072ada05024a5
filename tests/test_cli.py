"""The command line as a user types it: hash-password's input, serve's port check, quiet logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from adapter.cli import app
from adapter.config import verify_password

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, stdin: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapter.cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_hash_password_reads_a_piped_password_from_stdin():
    result = run_cli("hash-password", stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()  # only the hash on stdout: HASH=$(... < file) works
    assert verify_password("correct horse battery", line)
    assert not verify_password("correct horse battery\n", line)


def test_hash_password_asks_twice_without_echo_on_a_terminal(monkeypatch):
    from adapter import cli

    monkeypatch.setattr(cli, "stdin_is_terminal", lambda: True)
    result = CliRunner().invoke(app, ["hash-password"], input="s3cret pw\ns3cret pw\n")
    assert result.exit_code == 0, result.output
    assert "Password" in result.output and "Repeat" in result.output
    assert "s3cret pw" not in result.output  # hidden input
    assert verify_password("s3cret pw", result.output.strip().splitlines()[-1])


def test_hash_password_with_nothing_on_stdin_says_how_to_give_it():
    result = run_cli("hash-password", stdin="")
    assert result.returncode == 2 and result.stdout == ""
    assert "no password on stdin" in result.stderr and "Traceback" not in result.stderr


def test_serve_on_a_busy_port_fails_at_once_naming_the_port_option(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", port, "--data-dir", tmp_path / "data")
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "already in use" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()


def test_faiss_loader_lines_show_only_when_debugging():
    """faiss logs which CPU build it loads (AVX512, AVX2, ...) at INFO on every start."""
    code = ("import sys; from adapter.logs import configure_logging; "
            "configure_logging(sys.argv[1], '%(name)s: %(message)s'); import faiss")

    def stderr_at(level: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, level], capture_output=True, text=True, timeout=120,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr
        return out.stderr

    assert "faiss.loader" not in stderr_at("info")
    assert "faiss.loader: Loading faiss" in stderr_at("debug")


def test_unknown_log_level_is_a_clear_error(tmp_path):
    result = run_cli("serve", "--port", 0, "--data-dir", tmp_path / "data", "--log-level", "loud")
    assert result.returncode == 2 and "unknown log level 'loud'" in result.stderr and "Traceback" not in result.stderr
