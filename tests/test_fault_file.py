"""The operator's fault file (``shoal faults set`` / ``clear``): in force on a running server once the command
returns, so that the next request already meets the faults, or no longer does."""

from __future__ import annotations

from pathlib import Path

from shoal.reconcilers.faults import Faults, FaultSource, clear, write


def test_faults_set_or_cleared_are_in_force_when_the_command_returns(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    server = FaultSource(path)  # as a running server holds it: looked at again at most every LOOK_EVERY
    assert server.current().clock_offset == 0.0
    write(path, Faults(clock_offset=3 * 3600.0))
    assert server.current().clock_offset == 3 * 3600.0
    clear(path)
    assert server.current().clock_offset == 0.0, "the clock is back for the very next request"
