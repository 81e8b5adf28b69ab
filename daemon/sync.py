"""Sync: the outbox to the catalog, offline-proof, private by construction.

One ``Syncer`` owns the conversation with the catalog: registration (the token is kept in the
identity file), observation batches (gzip'd, at most 500 rows or 1 MiB; a 413 halves the batch), the
contribute setting, the deletion request and the taste profile. Rows are acknowledged only from
the catalog's per-item status; a row the catalog refuses is parked with the reason and never
retried in a loop. Network errors and 5xx back off exponentially with jitter (capped at 1 h);
429/503 honour Retry-After; a change or "sync now" retries at once.

Gap filling follows the catalog (#24). The consensus of every track is fetched once by
fingerprint (``POST /v1/lookup``); from then on, a track whose observation the catalog holds is
*followed*: each sync asks the change feed (``GET /v1/changes``) what changed since a cursor kept
in the journal, in the recordings we hold, and nothing else; a library where nothing changed
costs that one request. A track the feed does not follow (the catalog did not know it, or has not
placed our observation yet) is looked up again at the next sync, then after 1 h, 2 h, 4 h ... at
most a day; ``cratesense sync`` asks about all of them at once. Every answer is decoded with the
contract's response models: a catalog that answers with anything else (or not at all) changes
nothing in the journal and is asked again later; a match below the look-up threshold fills
nothing.

Sync runs are requested, never overlapped: ``request()`` sets a flag that the single sync loop
picks up, so a request during a run is not lost (APScheduler drops a run-now while its job
runs; see shared/platform-notes.md). The journal is read and written through its own threads
(``JournalIO``), and batches are encoded and compressed off the event loop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import msgspec

from cratesense.analysis.constants import wire_version
from cratesense.analysis.model import Consensus
from cratesense.catalog import contract
from cratesense.catalog.contract import MAX_BATCH, MAX_LOOKUP
from cratesense.catalog.matching import LOOKUP_HIT
from cratesense.daemon.identity import Identity
from cratesense.daemon.journal import PARKED_UNDER, Journal
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.journal_read import JournalReader
from cratesense.daemon.recorder import observation_id

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH_BYTES = 1024 * 1024
MAX_BACKOFF = 3600.0
MAX_FEED_PAGES = 400  # per sync (200,000 recordings: a first sync of a big library); the rest at the next
REGISTER_TIMEOUT = 10.0  # registering before the first scan never holds the agent's start up longer
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)
_ITEM_FIELD = re.compile(r"^observations\[(\d+)\]")


class Backoff(Exception):
    """Stop this run; try again after ``delay`` seconds (or sooner on a change or sync now)."""

    def __init__(self, reason: str, delay: float | None = None, offline: bool = False) -> None:
        super().__init__(reason)
        self.delay, self.offline = delay, offline


class Syncer:
    """Talks to the catalog at ``base_url`` through sessions made by ``session_factory``."""

    def __init__(
        self,
        io: JournalIO,
        identity: Identity,
        base_url: str,
        session_factory: Callable[[], aiohttp.ClientSession],
        *,
        label: str,
        quiet_seconds: float = 60.0,
        contribute_default: bool = True,
    ) -> None:
        self._io = io
        self._identity = identity
        self._base_url = base_url.rstrip("/")
        self._session_factory = session_factory
        self.label = label  # "embedded" or the catalog URL, for status
        self._quiet = quiet_seconds
        self._contribute_default = contribute_default
        self._first_change_at: float | None = None
        self._requested = asyncio.Event()
        self._ask_all = False  # the next run looks up every track the feed does not follow, whatever its backoff
        self._conversation = asyncio.Lock()  # one session at a time: a run, or an export
        self._completed = asyncio.Condition()
        self._runs_completed = 0
        self._change_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        self._failures = 0
        self._batch_limit = MAX_BATCH
        self.syncing = False
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.offline = False
        self.next_retry_at: float | None = None
        self.sent_total = 0
        self.lookups_total = 0  # look-up requests this session (fingerprints, 100 at most each)
        self.followed_total = 0  # tracks the change feed brought news of this session
        self._contract: str | None = None  # the contract the catalog last answered under (its header)

    # --- requests --------------------------------------------------------------------------

    def request(self) -> None:
        """Sync as soon as the current run (if any) is over."""
        self._requested.set()

    def notify_change(self) -> None:
        """The library changed: sync after a quiet period, so an import of 500 files is one sync."""
        now = time.monotonic()
        if self._change_timer is not None and self._first_change_at is not None:
            if now - self._first_change_at > 5 * self._quiet:
                return  # changes keep coming (a long import): let the armed timer fire
            self._change_timer.cancel()
        else:
            self._first_change_at = now
        self._change_timer = asyncio.get_running_loop().call_later(self._quiet, self._changes_settled)

    def _changes_settled(self) -> None:
        self._change_timer = None
        self.request()

    async def sync_now(self, timeout: float = 60.0) -> None:
        """Request a run and wait until a run that started after this call has finished (the
        user asked: every track not followed yet is looked up, whatever its backoff)."""
        async with self._completed:
            target = self._runs_completed + (2 if self.syncing else 1)
            self._ask_all = True
            self.request()
            await asyncio.wait_for(self._completed.wait_for(lambda: self._runs_completed >= target), timeout)

    async def run(self) -> None:
        """The sync loop: one run at a time, until cancelled."""
        while True:
            await self._requested.wait()
            self._requested.clear()
            ask_all, self._ask_all = self._ask_all, False
            self.syncing = True
            try:
                await self._run_once(ask_all)
            finally:
                self.syncing = False
                async with self._completed:
                    self._runs_completed += 1
                    self._completed.notify_all()

    async def _run_once(self, ask_all: bool = False) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        try:
            async with self._conversation, self._session_factory() as session:
                self._session = session
                await self._registered()
                await self._push_settings()
                await self._send_deletion()
                await self._send_observations()
                await self._follow()
                await self._look_up(ask_all=ask_all)
                await self._send_profile()
            await self._reoffer_parked()
        except Backoff as exc:
            self._ask_all |= ask_all  # asked for: still owed at the retry
            self._failures += 1
            delay = exc.delay if exc.delay is not None else min(MAX_BACKOFF, 5.0 * 2 ** (self._failures - 1))
            delay *= random.uniform(0.8, 1.2)  # many agents must not retry in lockstep
            self.last_error, self.offline = str(exc), exc.offline
            self.next_retry_at = time.time() + delay
            self._retry_timer = asyncio.get_running_loop().call_later(delay, self.request)
            log.warning("sync postponed %.0f s: %s", delay, exc)
            return
        except Exception as exc:  # a bug of ours: a status, not a dead daemon
            log.exception("sync failed")
            self.last_error = f"internal error: {exc}"
            return
        self._failures = 0
        self.last_success_at = time.time()
        self.last_error, self.offline, self.next_retry_at = None, False, None

    # --- HTTP ---------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: dict | None = None, *, auth: bool = True, session=None
    ) -> tuple[int, dict]:
        headers = {}
        data = None
        if auth:
            headers["Authorization"] = f"Bearer {self._credentials()['token']}"
        if body is not None:  # a batch is up to 1 MiB of JSON: encoded and compressed off the loop
            data = await asyncio.to_thread(_compressed, body)
            headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
        try:
            async with (session or self._session).request(
                method, self._base_url + path, data=data, headers=headers, timeout=REQUEST_TIMEOUT
            ) as response:
                try:
                    answer = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    answer = {}
                status = response.status
                retry_after = response.headers.get("Retry-After")
                self._contract = response.headers.get(contract.CONTRACT_HEADER) or self._contract
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Backoff(f"the catalog cannot be reached ({type(exc).__name__}: {exc})", offline=True) from exc
        if status in (429, 503):
            raise Backoff(f"the catalog asks us to wait ({status})", delay=_seconds(retry_after))
        if status >= 500:
            raise Backoff(f"the catalog failed ({status}: {_error(answer)})")
        return status, answer if isinstance(answer, dict) else {}

    def _credentials(self) -> dict:
        return self._identity.get(f"catalog:{self._base_url}") or {}

    async def register(self, timeout: float = REGISTER_TIMEOUT) -> None:
        """Become a contributor now, if not yet (before the first scan, so the tracks a shared
        catalog knows skip their descriptors from the start). A catalog that cannot be reached
        in ``timeout`` is only logged: the first sync tries again."""
        try:
            async with asyncio.timeout(timeout), self._conversation, self._session_factory() as session:
                self._session = session
                await self._registered()
        except (Backoff, TimeoutError) as exc:
            log.info("not registered with the catalog yet (%s); the first sync tries again", str(exc) or "timed out")

    async def _registered(self) -> None:
        if self._credentials().get("token"):
            return
        status, answer = await self._call("POST", "/v1/contributors", auth=False)
        if status != 201:
            raise Backoff(f"registration refused ({status}: {_error(answer)})")
        registered = _decoded(answer, contract.Registered, "the registration")
        self._identity.set(
            f"catalog:{self._base_url}", {"contributor_id": registered.contributor_id, "token": registered.token}
        )
        await self._set("catalog_contribute_sent", None)
        await self._set("catalog_profile_sent", None)
        log.info("registered with the catalog as a new pseudonymous contributor")

    async def _authorized(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, answer = await self._call(method, path, body)
        if status == 401:  # the catalog forgot us (a reset database): register again
            self._identity.set(f"catalog:{self._base_url}", None)
            await self._registered()
            await self._push_settings()
            status, answer = await self._call(method, path, body)
        return status, answer

    async def _reoffer_parked(self) -> None:
        """Rows are parked because the catalog's contract refused them (an agent newer than its
        catalog sends fields the catalog does not know yet). When the catalog answers under
        another contract (upgraded, or another catalog), they are offered once more, at the next
        run; refused again, they are parked again with the new reason."""
        seen = self._contract
        if seen is None or seen == await self._setting(PARKED_UNDER):
            return
        count = await self._io.write(lambda journal: journal.unpark())  # first: a crash here re-offers, never strands
        await self._set(PARKED_UNDER, seen)
        if count:
            log.info("the catalog's contract changed: offering %d parked observation(s) again", count)
            self.request()

    # --- what is sent -------------------------------------------------------------------------

    # The user's privacy choices live in the identity file (their one owner), not the journal: a
    # journal that is damaged or deleted is rebuilt from a rescan, and must not come back
    # contributing. (Earlier versions kept them in the journal: ``adopt_choices`` moves them.)

    @property
    def contribute(self) -> bool:
        value = self._identity.get("contribute")
        return bool(self._contribute_default if value is None else value)

    async def _setting(self, key: str):
        return await self._io.read(lambda journal: journal.setting(key))

    async def _set(self, key: str, value) -> None:
        await self._io.write(lambda journal: journal.set_setting(key, value))

    def set_contribute(self, contribute: bool) -> None:
        self._identity.set("contribute", contribute)
        self.request()

    async def _push_settings(self) -> None:
        contribute = self.contribute
        if await self._setting("catalog_contribute_sent") == contribute:
            return
        status, answer = await self._authorized("PUT", "/v1/contributors/me", {"contribute": contribute})
        if status != 200:
            raise Backoff(f"the catalog refused the contribute setting ({status}: {_error(answer)})")
        _decoded(answer, contract.SettingsStored, "the contribute setting")
        await self._set("catalog_contribute_sent", contribute)

    def request_deletion(self) -> None:
        """Durable until the catalog confirms it: survives being offline and restarts."""
        self._identity.set("deletion", {"requested_at": time.time()})
        self.request()

    @property
    def deletion(self) -> dict | None:
        return self._identity.get("deletion")

    async def _send_deletion(self) -> None:
        deletion = self.deletion
        if not deletion or deletion.get("confirmed_at"):
            return
        # contribution goes off first, so nothing is re-uploaded behind the deletion
        self._identity.set("contribute", False)
        await self._push_settings()
        status, answer = await self._authorized("DELETE", "/v1/contributors/me/observations")
        if status != 200:
            raise Backoff(f"the catalog refused the deletion ({status}: {_error(answer)})")
        deleted = _decoded(answer, contract.Deleted, "the deletion").deleted
        self._identity.set("deletion", {**deletion, "confirmed_at": time.time(), "deleted": deleted})
        log.info("the catalog deleted %d observation(s) of ours", deleted)

    async def next_batch(self) -> list[tuple[int, dict]]:
        """The next rows to send, as sent: (outbox seq, observation with its id)."""
        limit = self._batch_limit

        def read(journal: JournalReader) -> list[tuple[int, dict]]:
            batch: list[tuple[int, dict]] = []
            size = 2
            for seq, observation, payload in journal.pending(limit):
                item = {"id": observation, **payload}
                item_size = len(json.dumps(item, ensure_ascii=False).encode()) + 1
                if batch and size + item_size > MAX_BATCH_BYTES:
                    break
                batch.append((seq, item))
                size += item_size
            return batch

        return await self._io.read(read)

    async def _send_observations(self) -> None:
        while self.contribute:  # checked before each request: a toggle takes effect at once
            batch = await self.next_batch()
            if not batch:
                return
            status, answer = await self._authorized("POST", "/v1/observations", {"observations": [i for _, i in batch]})
            error = _error_body(answer) if status != 200 else None
            if status == 200:
                by_id = {item["id"]: seq for seq, item in batch}
                done, refused = [], []
                for result in _decoded(answer, contract.IngestResponse, "an upload").results:
                    seq = by_id.get(result.id)
                    if seq is None:
                        continue
                    if result.status in ("accepted", "duplicate"):
                        done.append(seq)
                    else:
                        refused.append((seq, result.reason or "rejected"))

                refused_under = self._contract  # re-offered only under another contract

                def settle(journal: Journal) -> None:
                    for seq, reason in refused:
                        journal.park(seq, reason, refused_under)
                    journal.acknowledge(done)

                await self._io.write(settle)
                self.sent_total += len(done)
                self._batch_limit = min(MAX_BATCH, self._batch_limit * 2)
            elif status == 413 and len(batch) > 1:
                self._batch_limit = max(1, len(batch) // 2)
            elif status == 403 and error is not None and error.rule == "contribute=false":
                await self._set("catalog_contribute_sent", None)
                await self._push_settings()
            elif 400 <= status < 500:
                match = _ITEM_FIELD.match(error.field or "") if error is not None else None
                index = int(match.group(1)) if match and int(match.group(1)) < len(batch) else 0
                reason = error.error if error is not None else f"rejected ({status})"
                seq, refused_under = batch[index][0], self._contract
                await self._io.write(lambda journal: journal.park(seq, reason, refused_under))
                log.warning("the catalog rejected observation %s: %s", batch[index][1]["id"], reason)
            else:
                raise Backoff(f"unexpected answer {status} from the catalog")

    async def _follow(self) -> None:
        """The change feed: what changed since our cursor in the recordings we hold, page after
        page, each page's consensus and the cursor after it written in one go (a crash between
        pages asks for the rest again). Only while contributing (the feed exists because our
        observations do)."""
        if not self.contribute:
            return
        observation_keys: dict[str, str] | None = None  # our observation ids -> content keys, if needed
        for _ in range(MAX_FEED_PAGES):
            contributor = self._credentials().get("contributor_id")
            cursor = await self._setting("catalog_changes")
            if not cursor or cursor.get("contributor") != contributor:
                if cursor:  # registered anew (another catalog, or one that forgot us): follow nothing yet
                    await self._io.write(lambda journal: journal.forget_followed())
                cursor = {"contributor": contributor, "change": 0, "recording": None}
            after = "" if cursor["recording"] is None else f"&after={cursor['recording']}"
            status, answer = await self._authorized("GET", f"/v1/changes?since={cursor['change']}{after}")
            if status != 200:
                raise Backoff(f"the catalog refused the change feed ({status}: {_error(answer)})")
            page = _decoded(answer, contract.Changes, "the change feed")
            if contributor != self._credentials().get("contributor_id"):
                continue  # registered anew while asking: that cursor was another contributor's
            found: list[tuple[str, Consensus | None]] = []
            if page.changes:
                recordings = [change.recording for change in page.changes]
                by_recording = await self._io.read(lambda journal: journal.recording_tracks(recordings))
                if observation_keys is None and any(change.recording not in by_recording for change in page.changes):
                    secret = self._identity.secret
                    observation_keys = await self._io.read(lambda journal: {  # as the recorder derives them
                        observation_id(secret, key, wire_version(version)): key for key, version in journal.track_versions()})
                for change in page.changes:
                    keys = set(by_recording.get(change.recording, ()))
                    keys.update(observation_keys[o] for o in change.observations if observation_keys and o in observation_keys)
                    consensus = Consensus(recording=change.recording, contributors=change.contributors,
                                          metadata=change.metadata, analysis=change.analysis)
                    found += [(key, consensus) for key in sorted(keys)]
            cursor = {"contributor": contributor, "change": page.cursor.change, "recording": page.cursor.recording}

            def record(journal: Journal, found=found, cursor=cursor) -> None:
                if found:
                    journal.record_consensus(found, followed=True)
                journal.set_setting("catalog_changes", cursor)

            await self._io.write(record)
            self.followed_total += len(found)
            if not page.more:
                return

    async def _look_up(self, batches: int = 20, ask_all: bool = False) -> None:
        """Gap filling by fingerprint: the catalog's consensus for the tracks the change feed
        does not follow yet (new ones, unknown ones, their backoff run out; with ``ask_all``,
        all of them), fetched in batches and kept in the journal (shown in the library and the
        export, never written into the user's files). A look-up sends fingerprints, so it
        happens only while contributing."""
        started = time.time()
        now = math.inf if ask_all else started
        for _ in range(batches):
            if not self.contribute:
                return
            due = await self._io.read(lambda journal: journal.lookup_due(MAX_LOOKUP, now, asked_before=started))
            if not due:
                return
            query = {"fingerprints": [{"chromaprint": fp, "duration": max(1.0, duration)} for _, fp, duration in due]}
            status, answer = await self._authorized("POST", "/v1/lookup", query)
            found = [(key, match) for (key, _, _), match in zip(due, _matches(status, answer, len(due)))]
            self.lookups_total += 1
            await self._io.write(lambda journal: journal.record_consensus(found))

    # --- the library asks: is this track known well enough to skip its descriptors? ----------

    def can_look_up(self) -> bool:
        """A look-up now would likely be answered: contributing (a look-up sends fingerprints),
        registered, and the catalog not known to be unreachable."""
        return self.contribute and bool(self._credentials().get("token")) and not self.offline

    async def look_up(self, fingerprints: list[tuple[str, float]]) -> list[Consensus | None]:
        """The catalog's consensus for each (chromaprint, duration), or None where it knows
        nothing. Its own session, outside the sync run, so a long sync does not hold up the
        analysis queue. Raises ``Backoff`` when there is no answer."""
        if not self.can_look_up():
            raise Backoff("look-ups are off (not contributing, not registered or offline)")
        query = {"fingerprints": [{"chromaprint": fp, "duration": max(1.0, duration)} for fp, duration in fingerprints]}
        async with self._session_factory() as session:
            status, answer = await self._call("POST", "/v1/lookup", query, session=session)
        return _matches(status, answer, len(fingerprints))

    async def _send_profile(self) -> None:
        """The profile, when it changed since the catalog last got it (the journal keeps it
        up to date with every change; sending it is one small request)."""
        profile, revision = await self._io.read(lambda journal: journal.profile())
        if await self._setting("catalog_profile_sent") == revision:
            return
        status, answer = await self._authorized("PUT", "/v1/profile", profile)
        if status != 200:
            raise Backoff(f"the catalog refused the profile ({status}: {_error(answer)})")
        _decoded(answer, contract.ProfileStored, "the profile")
        await self._set("catalog_profile_sent", revision)

    async def export(self) -> dict:
        async with self._conversation, self._session_factory() as session:
            self._session = session
            await self._registered()
            status, answer = await self._authorized("GET", "/v1/contributors/me/export")
        if status != 200:
            raise Backoff(f"the catalog refused the export ({status}: {_error(answer)})")
        return msgspec.to_builtins(_decoded(answer, contract.Export, "the export"))

    async def recommendations(self) -> dict:
        """"DJs with similar taste also have": from a shared catalog, which compares our taste
        profile (histograms, never a track list) with other contributors'."""
        from cratesense.errors import QueryError

        if self.label == "embedded":
            raise QueryError("recommendations come from a shared catalog (set sync.catalog_url): the embedded "
                             "catalog knows only your own library")
        try:
            async with self._conversation, self._session_factory() as session:
                self._session = session
                await self._registered()
                await self._send_profile()
                status, answer = await self._authorized("GET", "/v1/recommendations")
                if status != 200:
                    raise QueryError(f"the catalog refused ({status}: {_error(answer)})")
                found = _decoded(answer, contract.Recommendations, "the recommendations").recommendations
        except Backoff as exc:
            raise QueryError(f"the catalog cannot be asked now: {exc}") from None
        # what we hold, by fingerprint: the catalog knows only what a contributor sent it
        sketches = await self._io.read(lambda journal: journal.fingerprint_sketches())
        held = _held_by_sketch([recommendation.sketch for recommendation in found], sketches)
        return {"recommendations": [msgspec.to_builtins(recommendation)
                                    for recommendation, ours in zip(found, held) if not ours]}

    def status(self) -> dict:
        return {
            "catalog": self.label,
            "contribute": self.contribute,
            "syncing": self.syncing,
            "last_sync_at": self.last_success_at,
            "last_sync_error": self.last_error,
            "offline": self.offline,
            "next_retry_at": self.next_retry_at,
            "deletion": self.deletion,
            "sent_this_session": self.sent_total,
        }


def adopt_choices(identity: Identity, journal: JournalReader) -> None:
    """Privacy choices an earlier version kept in the journal move into the identity file once
    (the identity file is their one owner from then on)."""
    for key in ("contribute", "deletion"):
        if identity.get(key) is None and journal.setting(key) is not None:
            identity.set(key, journal.setting(key))


def _matches(status: int, answer: dict, asked: int) -> list[Consensus | None]:
    """A look-up's answer as the typed consensus, one per fingerprint asked (None where the
    catalog knows nothing, or matched below the look-up threshold: nothing is ever filled from a
    doubtful match); ``Backoff`` for a refusal or an answer that is not one (nothing of it is kept)."""
    if status != 200:
        raise Backoff(f"the catalog refused a look-up ({status}: {_error(answer)})")
    results = _decoded(answer, contract.LookupResponse, "a look-up").results
    if len(results) != asked:
        raise Backoff(f"the catalog answered {len(results)} look-ups for {asked}")
    return [match if match is not None and match.score is not None and match.score >= LOOKUP_HIT else None
            for match in results]


SHARED_SKETCH_TERMS = 2  # two fingerprints whose sketches share this many terms are one recording


def _held_by_sketch(wanted: list[list[int]], sketches: list[tuple[str, bytes, float]]) -> list[bool]:
    """For each sketch of ``wanted``, whether one of our tracks' fingerprint sketches shares at
    least ``SHARED_SKETCH_TERMS`` of its terms (one pass over the library, a dict look-up per term)."""
    from cratesense.daemon.trackview import unpack_terms

    owners: dict[int, list[int]] = {}
    for index, terms in enumerate(wanted):
        for term in set(terms):
            owners.setdefault(term, []).append(index)
    held = [False] * len(wanted)
    for _, blob, _ in sketches:
        shared: dict[int, int] = {}
        for term in unpack_terms(blob):
            for index in owners.get(term, ()):
                shared[index] = shared.get(index, 0) + 1
                if shared[index] >= SHARED_SKETCH_TERMS:
                    held[index] = True
    return held


def _error_body(answer: dict) -> contract.Error | None:
    """A 4xx/5xx body as the contract's ``Error``, or None when it is not one."""
    try:
        return msgspec.convert(answer, contract.Error)
    except (msgspec.ValidationError, TypeError):
        return None


def _error(answer: dict) -> str:
    """What a refusal says, for a log line or a status."""
    error = _error_body(answer)
    return error.error if error is not None else "no reason given"


def _decoded(answer: dict, model: type[T], what: str) -> T:
    """The catalog's answer as the contract's ``model``, or a ``Backoff``: a broken or hostile
    catalog's answer never reaches the journal."""
    try:
        return msgspec.convert(answer, model)
    except (msgspec.ValidationError, TypeError) as exc:
        raise Backoff(f"the catalog answered {what} with something else ({exc})") from None


def _compressed(body: dict) -> bytes:
    return gzip.compress(json.dumps(body, ensure_ascii=False).encode(), compresslevel=6)


def _seconds(retry_after: str | None) -> float | None:
    try:
        return max(1.0, float(retry_after)) if retry_after else None
    except ValueError:
        return None
