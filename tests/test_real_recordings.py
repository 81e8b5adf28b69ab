"""Opt-in (``pytest -m real_recordings``): every file of real Debian music packages is analyzed
with zero crashes, and every fingerprint matches fpcalc's."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import fpcalc
from cratesense.daemon.pool import AnalysisPool, Task
from realaudio import fetch
from test_analysis_fingerprint import bit_error_rate

pytestmark = pytest.mark.real_recordings


@pytest.mark.skipif(shutil.which("fpcalc") is None, reason="fpcalc not installed")
def test_real_recordings_analyze_and_match_fpcalc():
    files = fetch()
    assert len(files) >= 20, "expected the packages' recordings"
    with AnalysisPool(workers=os.cpu_count() or 1, timeout=300) as pool:
        outcomes = list(pool.run(Task(str(path)) for path in files))
    assert len(outcomes) == len(files)
    crashes = [o for o in outcomes if o.error_kind in ("crash", "internal", "timeout")]
    assert not crashes, crashes
    exact = close = 0
    for outcome in outcomes:
        status, reference = fpcalc(outcome.path)
        if outcome.error_kind in ("silent", "too-short"):
            continue  # refused by design (fpcalc prints a degenerate fingerprint for these)
        if not outcome.ok:
            # A file FFmpeg cannot decode is a normal event; fpcalc must not read it either.
            assert reference is None or not reference.get("fingerprint"), outcome
            continue
        assert reference is not None, f"fpcalc read {outcome.path} but exited {status}"
        ours = outcome.analysis["fingerprint"]["chromaprint"]
        if ours == reference["fingerprint"]:
            exact += 1
        else:
            assert bit_error_rate(ours, reference["fingerprint"]) < 0.001, outcome.path
            close += 1
    print(f"\n{len(files)} real files: {exact} bit-identical to fpcalc, {close} within decoder rounding, "
          f"{sum(not o.ok for o in outcomes)} refused with a recorded reason")
