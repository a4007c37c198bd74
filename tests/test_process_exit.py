"""``exit_process``: the process ends with the status, its ``atexit`` handlers and stream
flushes run (the objects frozen by then), and the ``equiforce`` console script ends through it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points


def test_exit_process_keeps_the_status_atexit_handlers_and_buffered_output():
    code = textwrap.dedent(
        """
        import atexit, gc, sys
        from equiforce.process_exit import exit_process
        atexit.register(lambda: print("atexit, frozen:", gc.get_freeze_count() > 0))
        sys.stdout.write("buffered ")  # no newline, no flush
        exit_process(3)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered atexit, frozen: True\n"


def test_the_command_line_ends_through_exit_process(monkeypatch):
    import equiforce.cli.main as cli

    (script,) = entry_points(group="console_scripts", name="equiforce")
    assert script.value == "equiforce.cli.main:script"
    statuses = []
    monkeypatch.setattr(cli, "main", lambda: 2)
    monkeypatch.setattr(cli, "exit_process", statuses.append)
    cli.script()
    assert statuses == [2]
