"""The CLI ends its process without the interpreter's teardown, but never without its exit handlers, its
buffered output or its exit status (a real `flowerkit` process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """
import atexit, sys
atexit.register(lambda: print("exit handler ran", flush=True))
sys.stdout.write("buffered, not flushed")  # no newline: still in the buffer when the command returns
from flowerkit.cli import main
sys.argv = ["flowerkit", *sys.argv[1:]]
main()
print("never printed: main does not return")
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=120)


def test_exit_handlers_output_and_status_survive(tmp_path: Path) -> None:
    listed = run("runs", "list", "--output-dir", str(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("buffered, not flushed") and f"No runs under {tmp_path}" in listed.stdout
    assert listed.stdout.rstrip().endswith("exit handler ran") and "never printed" not in listed.stdout
    missing = run("runs", "show", "nope", "--output-dir", str(tmp_path))
    assert missing.returncode == 3 and "No run named 'nope'" in missing.stderr
    assert "exit handler ran" in missing.stdout
    unknown = run("no-such-command")
    assert unknown.returncode == 2 and "exit handler ran" in unknown.stdout


def test_exit_code_of_system_exit_values() -> None:
    from flowerkit.cli.fast_exit import exit_code

    assert (exit_code(None), exit_code(0), exit_code(4)) == (0, 0, 4)
    assert exit_code("a message") == 1
