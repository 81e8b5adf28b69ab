"""The change feed: what changed, since a cursor the agent keeps, in the recordings it holds.

An agent that contributes holds its recordings at the catalog (its observations were placed in
them). Every time a recording's consensus changes it is stamped with the next number of one
counter (``Store._stamp``: numbers in commit order), so "what changed since my cursor" is a range
of an index, and a library where nothing changed costs one small request per sync that answers
nothing, however large the library. Each change names the requester's own observation ids in
the recording (never anyone else's), so the agent can tell which of its tracks it concerns even
when it never looked that recording up.

The cursor is (change number, recording id): one change (an erasure, a settled slice) can stamp
many recordings with one number, so a page may end inside it. Pages hold at most ``PAGE``
recordings; ``more`` says another page follows at once.
"""

from __future__ import annotations

from cratesense.catalog.store import CONSENSUS_FIELDS, Store, recording_dict

PAGE = 500
_EVERY_ID = 2**62  # "after every recording of that change"


def changes(store: Store, contributor: str, since: int, after: int | None = None, limit: int = PAGE) -> dict:
    """The recordings ``contributor`` holds whose consensus changed after the cursor, in change
    order, with the cursor to ask from next time: after change ``since`` (with ``after``: after
    recording ``after`` within change ``since``, where a page ended). May be answered by a
    standby that lags: its snapshot is a consistent prefix of the primary's changes."""
    return store._lagging(lambda backend: _changes(backend, contributor, since, after, limit))


def _changes(backend, contributor: str, since: int, after: int | None, limit: int) -> dict:
    columns = ", ".join(f"r.{name}" for name in CONSENSUS_FIELDS)
    with backend.reading() as db:
        # the head first: every change numbered up to it is visible to this snapshot (numbers
        # are taken in commit order), so nothing between the cursor and the head is skipped
        head = db.execute("SELECT value FROM counters WHERE counter = 'consensus'").fetchone().value
        if since > head:  # a standby behind what we were told before: nothing new yet
            return {"changes": [], "cursor": {"change": since, "recording": after}, "more": False}
        rows = db.execute(
            f"SELECT r.id AS recording, r.contributors, {columns}, r.changed FROM recordings r WHERE r.changed <= ? "
            "AND (r.changed > ? OR (r.changed = ? AND r.id > ?)) AND EXISTS "
            "(SELECT 1 FROM observations o WHERE o.contributor = ? AND o.recording = r.id) "
            "ORDER BY r.changed, r.id LIMIT ?",
            (head, since, since, _EVERY_ID if after is None else after, contributor, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        mine: dict[int, list[str]] = {}
        if rows:
            where, params = backend.any_of("recording", [row.recording for row in rows])
            for row in db.execute(f"SELECT recording, id FROM observations WHERE contributor = ? AND {where} ORDER BY id",
                                  (contributor, *params)):
                mine.setdefault(row.recording, []).append(row.id)
    cursor = {"change": rows[-1].changed, "recording": rows[-1].recording} if more else {"change": head, "recording": None}
    return {
        "changes": [{**recording_dict(row), "observations": mine.get(row.recording, [])} for row in rows],
        "cursor": cursor,
        "more": more,
    }
