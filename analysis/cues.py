"""Cue points from the phrases: the hot cues a DJ sets by hand before a gig, and a memory cue
at every phrase start. Named and coloured the same way in every export (rekordbox, Traktor,
Serato) and on the page.

Hot cues keep fixed slots, so a DJ finds each in the same place on every track:

  A  Mix in     the first downbeat of the intro (bar 1)        green
  B  Drop       the first drop (a song's first chorus)          red
  C  Breakdown  the main breakdown (the longest; then the lowest) blue
  D  Mix out    the start of the outro                           orange

A slot whose phrase the track does not have stays empty. Every cue is a bar line of the beat
grid the exports write (``phrases.bar_grid``), at or after 0 s and before the track's end; a
track without a grid or phrases has no cues.
"""

from __future__ import annotations

from cratesense.analysis.model import Cue, Phrase

# Colours from Serato's own cue palette (rekordbox takes any RGB; Traktor has none).
COLOURS = {
    "intro": "#00CC00",  # green
    "verse": "#00CCCC",  # cyan
    "build": "#CCCC00",  # yellow
    "drop": "#CC0000",  # red
    "breakdown": "#0000CC",  # blue
    "outro": "#CC4400",  # orange
}
HOT_CUES = (("Mix in", "intro"), ("Drop", "drop"), ("Breakdown", "breakdown"), ("Mix out", "outro"))


def place_cues(phrases: tuple[Phrase, ...] | None, duration: float | None) -> tuple[Cue, ...] | None:
    """Hot cues and a memory cue per phrase start, ordered by time (hot cues first at one time);
    None without phrases. A phrase starting outside [0, duration) gives no cue."""
    if not phrases or not duration:
        return None
    inside = [phrase for phrase in phrases if 0.0 <= phrase.start < duration]
    if not inside:
        return None
    chosen: dict[int, Phrase] = {}
    for slot, (_, label) in enumerate(HOT_CUES):
        found = [phrase for phrase in inside if phrase.label == label]
        if not found:
            continue
        if label == "breakdown":
            chosen[slot] = max(found, key=lambda phrase: (phrase.bars, -phrase.energy, -phrase.start))
        elif label == "outro":
            chosen[slot] = found[-1]
        else:
            chosen[slot] = found[0]
    if 0 not in chosen:  # a track without an intro is mixed in at its first phrase
        chosen[0] = inside[0]
    hot = [Cue(start=phrase.start, bar=phrase.bar, name=HOT_CUES[slot][0], colour=COLOURS[HOT_CUES[slot][1]], hot=slot)
           for slot, phrase in chosen.items()]
    memory = [Cue(start=phrase.start, bar=phrase.bar, name=phrase.label.capitalize(), colour=COLOURS[phrase.label])
              for phrase in inside]
    return tuple(sorted(hot + memory, key=lambda cue: (cue.start, cue.hot is None, cue.hot or 0)))
