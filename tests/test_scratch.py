"""Scratch directories: gone after the block, and after a SIGKILL by the next one made there."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from factorflow.scratch import remove_abandoned, scratch_dir

PREFIX = ".factorflow-test-"
HOLD = """
import sys, time
from factorflow.scratch import scratch_dir
with scratch_dir(sys.argv[1], {prefix!r}) as path:
    (path / "part-00000.arrow").write_bytes(b"x" * 1000)
    print(path, flush=True)
    time.sleep(600)
"""


def _holder(parent) -> tuple[subprocess.Popen, str]:
    """A real process inside ``scratch_dir(parent)``; returns it and its directory."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(prefix=PREFIX), str(parent)],
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_the_directory_is_removed_when_the_block_ends_or_raises(tmp_path):
    with scratch_dir(tmp_path, PREFIX) as path:
        (path / "f").write_text("x")
        assert path.parent == tmp_path and path.name.startswith(PREFIX)
    assert not path.exists()
    with pytest.raises(RuntimeError), scratch_dir(tmp_path, PREFIX) as path:
        raise RuntimeError("boom")
    assert not path.exists()


def test_a_killed_process_leaves_its_directory_until_the_next_one_is_made(tmp_path):
    proc, left = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / left).is_dir()  # SIGKILL runs no clean-up
    with scratch_dir(tmp_path, PREFIX) as path:
        assert not (tmp_path / left).exists()
        assert path.is_dir()


def test_a_live_process_keeps_its_directory(tmp_path):
    proc, held = _holder(tmp_path)
    try:
        assert remove_abandoned(tmp_path, PREFIX) == []
        assert (tmp_path / held).is_dir()
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while (tmp_path / held).exists() and time.monotonic() < deadline:
        remove_abandoned(tmp_path, PREFIX)
    assert not (tmp_path / held).exists()


def test_directories_of_other_hosts_and_other_names_are_left_alone(tmp_path):
    other_host = tmp_path / f"{PREFIX}otherhost-1-abc"
    unparsed = tmp_path / f"{PREFIX}whatever"
    other_prefix = tmp_path / ".something-else-1-abc"
    for path in (other_host, unparsed, other_prefix):
        path.mkdir()
    assert remove_abandoned(tmp_path, PREFIX) == []
    assert all(p.is_dir() for p in (other_host, unparsed, other_prefix))
