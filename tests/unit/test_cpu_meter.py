"""The bench's CPU accounting (tools/stacks.cpu_used): processes come and go inside a
measured window (PostgreSQL's backends above all), and none may take CPU out of the figure:
a backend that exits must not subtract what it used before the window."""

from __future__ import annotations

import os

from tools.stacks import ProcessCpu, Reading, cpu_used, read_processes

POSTMASTER = (100, 1)


def reading(*processes: tuple[int, int, int, float, float]) -> Reading:
    """(pid, start tick, ppid, own, reaped) per process."""
    return {(pid, started): ProcessCpu(ppid=ppid, own=own, reaped=reaped)
            for pid, started, ppid, own, reaped in processes}


def test_a_backend_exiting_in_the_window_counts_what_it_used_in_it() -> None:
    # The backend had used 40 s before the window and 3 s in it, then exited: the postmaster
    # reaped it, so its reaped CPU grew by the backend's whole life (43 s). Another backend
    # used 2 s; the postmaster itself 0.5 s.
    start = reading((100, 1, 1, 10.0, 500.0), (200, 7, 100, 40.0, 0.0), (201, 8, 100, 5.0, 0.0))
    end = reading((100, 1, 1, 10.5, 543.0), (201, 8, 100, 7.0, 0.0))
    assert cpu_used(start, end) == 3.0 + 2.0 + 0.5


def test_a_process_exiting_whose_parent_is_elsewhere_subtracts_nothing() -> None:
    # Its parent is outside the group (the bench reaps the services it started): what it
    # used in the window is the parent's, and what it used before is never taken off the
    # others' 2 s (summing the group at both readings gave 2 - 40: nothing).
    start = reading((300, 9, 1, 40.0, 0.0), (301, 9, 1, 5.0, 0.0))
    end = reading((301, 9, 1, 7.0, 0.0))
    assert cpu_used(start, end) == 2.0


def test_processes_started_in_the_window_count_whole() -> None:
    # A backend started in the window and still running; one that started and exited in
    # it shows in the postmaster's reaped CPU only.
    start = reading((100, 1, 1, 10.0, 500.0))
    end = reading((100, 1, 1, 10.0, 501.5), (202, 900, 100, 4.0, 0.0))
    assert cpu_used(start, end) == 1.5 + 4.0


def test_a_reused_pid_is_a_new_process() -> None:
    # pid 200 exited (40 s before the window, 3 s in it) and a new backend took its pid and
    # used 1 s: the new one is not measured against the old one's 40 s.
    start = reading((100, 1, 1, 10.0, 500.0), (200, 7, 100, 40.0, 0.0))
    end = reading((100, 1, 1, 10.0, 543.0), (200, 950, 100, 1.0, 0.0))
    assert cpu_used(start, end) == 3.0 + 1.0


def test_an_empty_or_shrinking_group_is_never_negative() -> None:
    assert cpu_used({}, {}) == 0.0
    assert cpu_used(reading((400, 3, 1, 9.0, 1.0)), {}) == 0.0


def test_a_reading_of_this_process() -> None:
    r = read_processes([os.getpid(), 0])  # pid 0 has no /proc entry: left out
    [(pid, started)] = r
    assert pid == os.getpid() and started > 0
    assert r[pid, started].ppid == os.getppid()
    assert r[pid, started].own > 0
