"""The ingest's process pool: every file once, a crashing file isolated and named, bounded waits."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from client.worker_pool import process_files
from common.errors import InputError


def _square_or_crash(crash_on: str) -> Callable[[], Callable[[str], tuple[str, int, int]]]:
    def make() -> Callable[[str], tuple[str, int, int]]:
        def work(path: str) -> tuple[str, int, int]:
            if path == crash_on:
                os.kill(os.getpid(), signal.SIGSEGV)  # what a C decoder does on hostile data
            return path, int(path) ** 2, os.getpid()

        return work

    return make


def test_every_file_once_in_worker_processes() -> None:
    paths = [str(i) for i in range(100)]
    results = list(process_files(_square_or_crash(""), paths, workers=2, on_crash=lambda p: (p, -1, 0)))
    assert sorted(r[0] for r in results) == sorted(paths)
    assert all(square == int(path) ** 2 for path, square, _ in results)
    assert os.getpid() not in {pid for _, _, pid in results}  # done in worker processes


def test_a_file_that_kills_its_worker_is_named_and_the_rest_complete() -> None:
    paths = [str(i) for i in range(60)]
    results = list(process_files(_square_or_crash("17"), paths, workers=2, on_crash=lambda p: (p, -1, 0)))
    assert sorted(r[0] for r in results) == sorted(paths)
    crashed = [path for path, square, _ in results if square == -1]
    assert crashed == ["17"]


def test_in_process_when_one_worker() -> None:
    results = list(process_files(_square_or_crash(""), ["2", "3"], workers=1, on_crash=lambda p: (p, -1, 0)))
    assert [(p, s) for p, s, _ in results] == [("2", 4), ("3", 9)]
    assert {pid for _, _, pid in results} == {os.getpid()}


def _sleeper() -> Callable[[str], str]:
    def work(path: str) -> str:
        time.sleep(30)
        return path

    return work


def test_a_stuck_decoder_fails_with_the_files_in_flight_named() -> None:
    started = time.monotonic()
    with pytest.raises(InputError, match="stuck on one of: a"):
        list(process_files(_sleeper, ["a"], workers=2, on_crash=lambda p: p, stall_seconds=1.0))
    assert time.monotonic() - started < 60
