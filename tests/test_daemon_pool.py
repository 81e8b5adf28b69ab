"""The analysis pool: real worker processes, real hangs and kills."""

from __future__ import annotations

import os
import signal
import threading
import time

from cratesense.daemon.pool import AnalysisPool, Task


def test_pool_analyzes_good_and_records_bad_files(tmp_path, formats_dir):
    broken = tmp_path / "broken.mp3"
    broken.write_bytes(b"\x00" * 5000)
    tasks = [Task(str(formats_dir["flac"])), Task(str(broken)), Task(str(formats_dir["mp3"]))]
    with AnalysisPool(workers=2, timeout=60) as pool:
        outcomes = {o.path: o for o in pool.run(tasks)}
    assert outcomes[str(formats_dir["flac"])].ok
    assert outcomes[str(formats_dir["mp3"])].ok
    assert outcomes[str(broken)].error_kind == "decode"


def test_hanging_file_times_out_and_the_queue_moves_on(tmp_path, formats_dir):
    """A FIFO nobody writes to blocks FFmpeg's open forever, as a hung network mount would."""
    fifo = tmp_path / "hang.mp3"
    os.mkfifo(fifo)
    with AnalysisPool(workers=1, timeout=3) as pool:
        started = time.monotonic()
        outcomes = {o.path: o for o in pool.run([Task(str(fifo)), Task(str(formats_dir["wav"]))])}
        elapsed = time.monotonic() - started
    assert outcomes[str(fifo)].error_kind == "timeout"
    assert "3 s limit" in outcomes[str(fifo)].error
    assert outcomes[str(formats_dir["wav"])].ok  # the replacement worker took the next file
    assert elapsed < 60


def test_killed_worker_is_recorded_and_replaced(tmp_path, formats_dir):
    fifo = tmp_path / "stuck.flac"
    os.mkfifo(fifo)
    with AnalysisPool(workers=1, timeout=120) as pool:

        def kill_when_busy():
            for _ in range(200):
                pids = pool.busy_pids()
                if str(fifo) in pids:
                    time.sleep(0.3)
                    os.kill(pids[str(fifo)], signal.SIGKILL)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_when_busy)
        killer.start()
        outcomes = {o.path: o for o in pool.run([Task(str(fifo)), Task(str(formats_dir["flac"]))])}
        killer.join()
    assert outcomes[str(fifo)].error_kind == "crash"
    assert "SIGKILL" in outcomes[str(fifo)].error
    assert outcomes[str(formats_dir["flac"])].ok
