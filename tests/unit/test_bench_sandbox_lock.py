"""The sandbox lock: test sessions and the bench hold it alone, phones (scripts/phone.py)
share it with each other."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from bench import sandbox


def _free_for(path: Path, mode: int) -> bool:
    """Could another holder take the lock in `mode` now? (A new open file: flock() locks
    belong to open files, so this stands for another process.)"""
    with path.open("w") as other:
        try:
            fcntl.flock(other, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@pytest.fixture
def lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tests.lock"
    monkeypatch.setattr(sandbox, "LOCK_FILE", path)
    return path


def test_phones_share_the_lock_and_keep_tests_and_the_bench_out(lock_file: Path) -> None:
    with sandbox.sandbox_lock(who="operator", shared=True):
        assert _free_for(lock_file, fcntl.LOCK_SH)  # checked first: else the next would hang
        with sandbox.sandbox_lock(who="5678", shared=True):  # a desk beside the operator
            assert not _free_for(lock_file, fcntl.LOCK_EX)
        assert not _free_for(lock_file, fcntl.LOCK_EX)  # a test session waits
    assert _free_for(lock_file, fcntl.LOCK_EX)


def test_the_bench_holds_the_lock_alone(lock_file: Path) -> None:
    with sandbox.sandbox_lock(who="bench"):
        assert not _free_for(lock_file, fcntl.LOCK_SH)  # a phone waits
        assert not _free_for(lock_file, fcntl.LOCK_EX)
    assert _free_for(lock_file, fcntl.LOCK_SH)
