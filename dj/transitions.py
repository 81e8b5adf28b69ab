"""Where to mix: where to leave track A and where to bring track B in, from their phrases.

A DJ mixes phrase against phrase: B's intro (drums, no drop) comes in over A's outro (drums, the
drop behind it), starting on a phrase boundary of A so both count bars together, and B's first
drop lands once A has played out, never on top of A's drop. So:

* **leave A** where its outro starts (its mix-out cue); a track without an outro is left at its
  last phrase, said so;
* **bring B in** at its intro's first downbeat (its mix-in cue), timed so that B's intro ends
  where A ends: when B's intro is longer than A's outro, B comes in at A's outro and its intro
  plays on after A has ended; when it is shorter, B comes in that many bars into A's outro (on a
  phrase boundary of 8 bars where there is one);
* the **overlap** is the bars both play, counted in A's bars (B is pitched to A's tempo; a
  double- or half-time B counts its bars at A's tempo);
* **energy**: the step from A's outro to B's intro and from track to track, in words;
* **drops**: whether a drop of one plays while the other sounds (then the plan says so).

Pure: phrases in, a ``Transition`` out, with its reasons in words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cratesense.analysis.model import Phrase

PHRASE_GRID = 8  # B comes in on a multiple of this many bars into A's outro where it can
MIN_OVERLAP = 4  # ... and plays with A for at least this many bars


@dataclass(frozen=True)
class Point:
    """A place in one track: the phrase it is in, its bar number and its time."""

    label: str
    bar: int  # bar 1: the track's first sounding bar (its mix-in)
    seconds: float

    def json(self) -> dict:
        return {"phrase": self.label, "bar": self.bar, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Transition:
    b_in: Point  # where B starts playing (its mix-in)
    a_at_b_in: Point  # where A is then
    a_out: Point  # where A has played out (its end), or is cut
    b_at_a_out: Point  # where B is then
    overlap_bars: float  # bars both play, in A's bars
    clash: bool  # a drop of one plays while the other sounds
    reasons: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return {"bring_b_in": self.b_in.json(), "on_a": self.a_at_b_in.json(), "leave_a": self.a_out.json(),
                "b_then": self.b_at_a_out.json(), "overlap_bars": self.overlap_bars, "drops_clash": self.clash,
                "reasons": self.reasons}


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _fold(a_bpm: float, b_bpm: float) -> float:
    """How many of B's beats pass in one of A's when B is pitched to A: 1, 2 (B counted at double
    time) or 0.5."""
    ratio = b_bpm / a_bpm
    return min((1.0, 2.0, 0.5), key=lambda fold: abs(ratio / fold - 1.0))


def _bar_seconds(phrases: Sequence[Phrase]) -> float:
    lengths = [(p.end - p.start) / p.bars for p in phrases[:-1] if p.bars] or \
        [(p.end - p.start) / max(p.bars, 1) for p in phrases]
    return sorted(lengths)[len(lengths) // 2]


def _at(phrases: Sequence[Phrase], bar: float, bar_seconds: float) -> Point:
    """The point of a track at ``bar`` (its bar numbers), in the phrase that holds it."""
    holding = next((p for p in reversed(phrases) if p.bar <= bar), phrases[0])
    if bar >= phrases[-1].bar + phrases[-1].bars:
        return Point("end", int(round(bar)), phrases[-1].end)
    return Point(holding.label, int(round(bar)), holding.start + (bar - holding.bar) * bar_seconds)


def plan_transition(a: Sequence[Phrase] | None, a_bpm: float | None, a_energy: int | None,
                    b: Sequence[Phrase] | None, b_bpm: float | None, b_energy: int | None) -> Transition | None:
    """How to mix from A into B, or None when either has no phrases (no bar grid)."""
    if not a or not b or not a_bpm or not b_bpm:
        return None
    reasons = []
    outro = a[-1]
    a_bar, b_bar = _bar_seconds(a), _bar_seconds(b)
    a_end = outro.bar + outro.bars  # A's bar after its last
    intro = b[0]
    fold = _fold(a_bpm, b_bpm)
    intro_at_a = intro.bars / fold  # B's intro in A's bars
    if intro_at_a >= outro.bars:
        enter = outro.bar
    else:  # B's intro ends where A ends (or later), on an 8-bar boundary of A's outro where one fits
        earliest = a_end - intro_at_a
        grid = [outro.bar + step for step in range(0, outro.bars, PHRASE_GRID)
                if outro.bar + step >= earliest and a_end - (outro.bar + step) >= MIN_OVERLAP]
        enter = grid[0] if grid else math.ceil(earliest)
    overlap = float(a_end - enter)
    b_in = Point(intro.label, intro.bar, intro.start)
    a_at_b_in = _at(a, enter, a_bar)
    a_out = Point("end", a_end, outro.end)
    b_at_a_out = _at(b, intro.bar + overlap * fold, b_bar)
    b_first_drop = next((p for p in b if p.label == "drop"), None)
    b_drop_at_a = enter + (b_first_drop.bar - intro.bar) / fold if b_first_drop else None
    clash = (b_drop_at_a is not None and b_drop_at_a < a_end) or any(
        p.label == "drop" and p.bar + p.bars > enter for p in a)
    if outro.label != "outro":
        reasons.append(f"A has no outro: its last phrase is a {outro.label} (from bar {outro.bar})")
    reasons.append(f"bring B in at its {intro.label} (bar {intro.bar}) on A's bar {enter}, {_clock(a_at_b_in.seconds)} "
                   f"into A ({a_at_b_in.label})")
    reasons.append(f"{overlap:g} bars together; A plays out at its bar {a_end} ({_clock(a_out.seconds)}) as B reaches "
                   f"bar {b_at_a_out.bar} ({b_at_a_out.label})")
    if clash:
        reasons.append("a drop plays while the other track sounds: cut the other's bass, or mix quicker")
    elif b_first_drop is not None:
        reasons.append("B's first drop comes after A has played out")
    if a_energy is not None and b_energy is not None:
        step = b_energy - a_energy
        words = "the same energy" if step == 0 else (f"a step up ({step:+d})" if step > 0 else f"a step down ({step:+d})")
        if abs(step) >= 3:
            words = f"a jump in energy ({step:+d})"
        reasons.append(f"energy {a_energy} → {b_energy}: {words}")
    return Transition(b_in, a_at_b_in, a_out, b_at_a_out, overlap, clash, reasons)
