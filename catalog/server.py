"""The catalog's HTTP API (aiohttp): the v1 endpoints of shared/design.md.

Strict at the door: bodies are capped before parsing (gzip'd ones after inflating, so a gzip
bomb stops at the cap), decoded into the contract's models and guarded; every rejection is a
JSON 4xx naming the field and the rule. Bearer-token auth on everything but registration, and
a token bucket per contributor (per address for registration) answers 429 with Retry-After.
Access logs carry method, route, status and time; never a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import zlib
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor

import msgspec
from aiohttp import web

from cratesense.catalog import contract, follow, recommend
from cratesense.catalog.openapi import document
from cratesense.catalog.contract import ContractError
from cratesense.catalog.store import ContributionOff, Store

log = logging.getLogger(__name__)
access_log = logging.getLogger("cratesense.catalog.access")

STORE = web.AppKey("store", Store)
BODY_SECONDS = web.AppKey("body_seconds", float)


class Database:
    """The store's blocking calls, run on a thread pool: no event loop ever waits on the
    database (a look-up answers while another request's batch is being matched)."""

    def __init__(self, store: Store, threads: int) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="catalog-db")
        self.down_since: float | None = None  # the database could not be reached (for the log and /health)

    async def __call__(self, method: str, *args):
        """``store.method(*args)`` on the pool. A connection the server dropped (a restarted
        primary) is noticed here: the pool's idle connections are checked and the call tried
        once more; still unreachable, it is DatabaseUnavailable (a 503 that says to retry)."""
        loop = asyncio.get_running_loop()
        call = getattr(self.store, method)
        try:
            result = await loop.run_in_executor(self._executor, call, *args)
        except self.store.backend.connection_errors as first:
            await loop.run_in_executor(self._executor, self.store.backend.recover)
            try:
                result = await loop.run_in_executor(self._executor, call, *args)
            except self.store.backend.connection_errors as exc:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.error("the catalog's database %s cannot be reached (%s); answering 503 until it is back",
                              self.store.label, " ".join(str(exc).split())[:300] or type(exc).__name__)
                raise DatabaseUnavailable() from first
        if self.down_since is not None:
            log.warning("the catalog's database %s is reachable again after %.1f s", self.store.label,
                        time.monotonic() - self.down_since)
            self.down_since = None
        return result

    async def run(self, function, *args):
        """``function(store, *args)`` on the pool: logic kept beside the store, not in it
        (follow.py, recommend.py)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, self.store, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


DATABASE = web.AppKey("database", Database)


class DatabaseUnavailable(Exception):
    """The database cannot be reached (restarting, failing over): answered 503 with Retry-After."""


class Settler:
    """Matching, out of the way of the answers. A lone ingest request settles its batch before
    it answers (what it sent is matched when the answer arrives, and the answer says into which
    recordings) when that needs no wait: it is the only ingest in flight at this worker, little
    else waits, and the matching lock is free at once (``Store.settle_now``). Otherwise the
    batch is only accepted (durably, cheaply), answered as pending, and matched by ``run()`` in
    short slices moments later. ``run()`` also looks for arrivals left by a worker that died,
    and re-derives consensus that has been stale long enough."""

    INLINE_MAX = 20  # a lone request settles its own batch and at most this backlog besides
    # arrivals matched per call: a slice costs a dozen statements whatever its size, but holds the
    # matching lock (other workers' lone requests find it taken) for as long as it takes to write
    SLICE = 40
    POLL_SECONDS = 2.0  # how often run() looks for work nobody woke it for
    RETRY_SECONDS = 5.0  # after a failure
    YIELD_SECONDS = 0.5  # a slice waits at most this long for a moment with no request in flight

    def __init__(self, database: Database) -> None:
        self.database = database
        self.in_flight = 0  # ingest requests being handled now
        self.answering = 0  # API requests of any kind being handled now
        self.deferred = 0  # batches answered before being matched (for status and tests)
        self._wake = asyncio.Event()
        self._wake.set()  # arrivals left by a previous run are settled at start

    async def accepted(self, ids: list[str]) -> dict[str, int]:
        """A batch's new arrivals (their observation ids) were accepted: observation id ->
        recording for those matched before the answer; the others are pending (``run()``
        matches them moments later)."""
        if not ids:
            return {}
        placed = None
        if self.in_flight <= 1:
            try:
                if await self.database("waiting") <= self.INLINE_MAX + len(ids):
                    placed = await self.database("settle_now", self.INLINE_MAX + len(ids))  # None: the lock is taken
            except DatabaseUnavailable:  # gone since the accept: Database() said so in one line; pending
                placed = None
            except Exception:  # the batch is committed already: answered as pending, the settler retries
                log.warning("matching an accepted upload at once failed; it is left to the settler", exc_info=True)
                placed = None
        if placed is None or any(i not in placed for i in ids):
            self.deferred += 1
            self._wake.set()
        return placed or {}

    def wake(self) -> None:
        self._wake.set()

    async def _answers_first(self) -> None:
        """Let the requests in flight be answered before the next slice takes the CPU (a burst
        of agents is answered first and matched moments later), waiting at most
        ``YIELD_SECONDS``, so under a sustained load matching still keeps up."""
        deadline = time.monotonic() + self.YIELD_SECONDS
        while self.answering > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
            # arrives as the event is set, and this loop then outlives the server's shutdown
            try:
                async with asyncio.timeout(self.POLL_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while True:
                    await self._answers_first()
                    if not await self.database("settle", self.SLICE):
                        break
                while await self.database("refresh", self.SLICE):
                    pass
                while await self.database("sweep"):  # an erasure's index terms, a slice at a time
                    await asyncio.sleep(0.05)  # (on SQLite each slice holds the one write lock)
            except DatabaseUnavailable:  # Database() said so in one line; the arrivals stay
                await asyncio.sleep(self.RETRY_SECONDS)
                self._wake.set()
            except Exception:  # a full disk: the arrivals stay; try again
                log.exception("matching accepted observations failed; retrying in %.0f s", self.RETRY_SECONDS)
                await asyncio.sleep(self.RETRY_SECONDS)
                self._wake.set()


SETTLER = web.AppKey("settler", Settler)


class Accepter:
    """Group commit: the batches that arrive while one accept transaction commits are accepted
    together in the next (``Store.accept_many``: one durable commit for all). A lone batch goes
    at once; under a burst, requests stop queueing one by one behind each other's fsync."""

    MAX_GROUP = 64  # batches per transaction (bounds how long one holds the writer)

    def __init__(self, database: Database) -> None:
        self.database = database
        self._waiting: list[tuple[str, list, asyncio.Future]] = []
        self._flushing = False
        self._flusher: asyncio.Task | None = None
        self.groups = 0  # transactions (for tests)

    async def accept(self, contributor: str, observations: list) -> list[dict]:
        """``Store.accept`` of one batch, grouped with whatever else is waiting."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((contributor, observations, future))
        if not self._flushing:
            self._flushing = True
            # held here: the loop keeps only a weak reference to a task (asyncio's documentation)
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:self.MAX_GROUP], self._waiting[self.MAX_GROUP:]
                self.groups += 1
                try:
                    outcomes = await self.database("accept_many", [(c, o) for c, o, _ in group])
                except Exception as exc:  # the whole transaction failed: every batch of it did
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), outcome in zip(group, outcomes):
                    if future.done():  # its request went away (the client hung up)
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._flushing = False


ACCEPTER = web.AppKey("accepter", Accepter)


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, bursts up to ``burst``. The buckets
    are the store's volatile state (``Store.take_token``): shared by every worker on PostgreSQL,
    this process's own on SQLite (its one process is every worker)."""

    FORGET_SECONDS = 60.0

    def __init__(self, database: Database, rate: float, burst: float) -> None:
        self.database, self.rate, self.burst = database, rate, burst
        self._forgotten_at = time.monotonic()

    async def take(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds to wait."""
        await self._forget()
        return await self.database("take_token", key, self.rate, self.burst)

    async def admit(self, token: str) -> tuple[str, bool, float] | None:
        """The contributor a token names (id, contribute) and its wait, in one store call."""
        await self._forget()
        return await self.database("admit", token, self.rate, self.burst)

    async def _forget(self) -> None:
        if time.monotonic() - self._forgotten_at > self.FORGET_SECONDS:
            self._forgotten_at = time.monotonic()
            await self.database("forget_idle_buckets", max(self.FORGET_SECONDS, self.burst / self.rate))


LIMITER = web.AppKey("limiter", RateLimiter)  # per contributor (per address for registration)
GUESSES = web.AppKey("guesses", RateLimiter)  # unknown tokens, per address


class Answers:
    """This worker's answers over the last minute, per route (for /health and /metrics)."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._seen: dict[str, deque[tuple[float, float, int]]] = defaultdict(deque)  # route -> (at, ms, status)

    def add(self, route: str, ms: float, status: int) -> None:
        now = time.monotonic()
        seen = self._seen[route]
        seen.append((now, ms, status))
        while seen and seen[0][0] < now - self.WINDOW:
            seen.popleft()

    def summary(self) -> dict[str, dict]:
        now = time.monotonic()
        result = {}
        for route, seen in sorted(self._seen.items()):
            recent = [(ms, status) for at, ms, status in seen if at >= now - self.WINDOW]
            if recent:
                times = sorted(ms for ms, _ in recent)
                result[route] = {"count": len(times), "p50_ms": round(times[len(times) // 2], 1),
                                 "p99_ms": round(times[min(len(times) - 1, int(0.99 * len(times)))], 1),
                                 "errors_5xx": sum(1 for _, status in recent if status >= 500)}
        return result


ANSWERS = web.AppKey("answers", Answers)


def _json(value) -> web.Response:
    """A JSON answer, encoded by msgspec (the answers a burst is made of: several times faster
    than the standard library's encoder)."""
    return web.Response(body=msgspec.json.encode(value), content_type="application/json")


def _error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def _errors_and_access_log(request: web.Request, handler):
    started = time.perf_counter()
    settler = request.app[SETTLER]
    settler.answering += 1
    try:
        response = await handler(request)
    except ContractError as exc:
        response = web.json_response(exc.to_json(), status=exc.status)
        if exc.status in (408, 413):
            response.force_close()  # the rest of the body was never read: this connection is done
    except DatabaseUnavailable:
        response = _error(503, "the catalog's database is unavailable; try again later", rule="database")
        response.headers["Retry-After"] = "5"
    except web.HTTPRequestEntityTooLarge:
        response = _error(413, f"the body is larger than {contract.MAX_BODY_BYTES} bytes", rule="body size")
    except web.HTTPException as exc:
        response = _error(exc.status, exc.reason)
        if "Retry-After" in exc.headers:
            response.headers["Retry-After"] = exc.headers["Retry-After"]
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        response = _error(500, "internal error")
    finally:
        settler.answering -= 1
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
    response.headers[contract.CONTRACT_HEADER] = request.app[CONTRACT]
    ms = 1000 * (time.perf_counter() - started)
    access_log.info("%s %s %d %.1fms", request.method, route, response.status, ms)
    if route.startswith("/v1/"):
        request.app[ANSWERS].add(f"{request.method} {route}", ms, response.status)
    return response


async def _body(request: web.Request) -> bytes:
    """The request body, inflated if gzip'd, never more than the cap (checked while reading)."""
    if request.content_length is not None and request.content_length > contract.MAX_BODY_BYTES:
        raise ContractError("", f"the body is larger than {contract.MAX_BODY_BYTES} bytes", status=413)
    raw = bytearray()

    async def read() -> None:
        async for chunk in request.content.iter_chunked(64 * 1024):
            raw.extend(chunk)
            if len(raw) > contract.MAX_BODY_BYTES:
                raise ContractError("", f"the body is larger than {contract.MAX_BODY_BYTES} bytes", status=413)

    try:  # a client that trickles its body must not hold a connection for ever
        await asyncio.wait_for(read(), request.app[BODY_SECONDS])
    except TimeoutError:
        raise ContractError("", f"the body did not arrive within {request.app[BODY_SECONDS]:g} s", status=408) from None
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(bytes(raw), contract.MAX_BODY_BYTES + 1)
        except zlib.error:
            raise ContractError("", "the body is not valid gzip", status=400) from None
        if len(body) > contract.MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise ContractError("", f"the inflated body is larger than {contract.MAX_BODY_BYTES} bytes", status=413)
        return body
    if encoding != "identity":
        raise ContractError("", f"unsupported Content-Encoding {encoding!r} (gzip or none)", status=415)
    return bytes(raw)


async def _client(request: web.Request) -> tuple[str, bool]:
    """The authenticated contributor (id, contribute), after the rate limit."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or len(header) > 200:
        raise web.HTTPUnauthorized(reason="a bearer token is required (POST /v1/contributors issues one)")
    token = header[len("Bearer "):].strip()
    found = await request.app[LIMITER].admit(token)
    if found is None:  # guesses are limited per address, whatever token each one tries
        wait = await request.app[GUESSES].take("guess:" + (request.remote or "?"))
        if wait:
            raise _too_many(wait)
        raise web.HTTPUnauthorized(reason="unknown bearer token")
    contributor, contribute, wait = found
    if wait:
        raise _too_many(wait)
    return contributor, contribute


def _too_many(wait: float) -> web.HTTPTooManyRequests:
    return web.HTTPTooManyRequests(
        reason="too many requests", headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        text='{"error": "too many requests", "rule": "rate limit"}', content_type="application/json",
    )


async def register(request: web.Request) -> web.Response:
    wait = await request.app[LIMITER].take("address:" + (request.remote or "?"))
    if wait:
        raise _too_many(wait)
    contributor, token = await request.app[DATABASE]("register")
    return web.json_response({"contributor_id": contributor, "token": token}, status=201)


async def ingest(request: web.Request) -> web.Response:
    contributor, contribute = await _client(request)
    settler = request.app[SETTLER]
    settler.in_flight += 1
    try:
        body = await _body(request)
        if not contribute:
            return _error(403, "contribution is turned off for this contributor (PUT /v1/contributors/me)",
                          rule="contribute=false")
        observations = contract.decode_observations(contract.decode(body, contract.IngestRequest))
        try:
            results = await request.app[ACCEPTER].accept(contributor, observations)
        except ContributionOff:  # turned off at another worker a moment ago
            return _error(403, "contribution is turned off for this contributor (PUT /v1/contributors/me)",
                          rule="contribute=false")
        accepted = [result["id"] for result in results if result["status"] == "accepted"]
        matched = await settler.accepted(accepted)
    finally:
        settler.in_flight -= 1
    for result in results:
        if result["id"] in matched and result["status"] == "accepted":
            result["recording"] = matched[result["id"]]
    return _json({"results": results, "accepted": len(accepted), "pending": sum(1 for i in accepted if i not in matched)})


async def lookup(request: web.Request) -> web.Response:
    await _client(request)
    query = contract.decode(await _body(request), contract.LookupRequest)  # the guard: each one decodes
    fingerprints = [(part.chromaprint, part.duration) for part in query.fingerprints]
    return _json({"results": await request.app[DATABASE]("lookup_encoded", fingerprints)})


async def put_profile(request: web.Request) -> web.Response:
    contributor, _ = await _client(request)
    profile = contract.decode(await _body(request), contract.Profile)
    await request.app[DATABASE]("put_profile", contributor, profile)
    return web.json_response({"stored": True})


async def put_settings(request: web.Request) -> web.Response:
    contributor, _ = await _client(request)
    settings = contract.decode(await _body(request), contract.ContributorSettings)
    await request.app[DATABASE]("set_contribute", contributor, settings.contribute)
    return web.json_response({"contribute": settings.contribute})


async def delete_observations(request: web.Request) -> web.Response:
    contributor, _ = await _client(request)
    deleted = await request.app[DATABASE]("delete_contributor_observations", contributor)
    request.app[SETTLER].wake()  # a large erasure left index terms to sweep
    return web.json_response({"deleted": deleted})


async def export(request: web.Request) -> web.Response:
    contributor, _ = await _client(request)
    return web.json_response(await request.app[DATABASE]("export", contributor))


async def changes(request: web.Request) -> web.Response:
    contributor, _ = await _client(request)
    since, after = _count_parameter(request, "since", 0), _count_parameter(request, "after", None)
    return web.json_response(await request.app[DATABASE].run(follow.changes, contributor, since, after))


def _count_parameter(request: web.Request, name: str, default: int | None) -> int | None:
    """A whole-number query parameter, or a 422 naming it."""
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise ContractError(name, "a whole number from 0 (the cursor the last answer gave)")
    return int(text)


async def recommendations(request: web.Request) -> web.Response:
    contributor, _ = await _client(request)
    return web.json_response({"recommendations": await request.app[DATABASE].run(recommend.recommend, contributor)})


async def _health(app: web.Application) -> tuple[int, dict]:
    store, database = app[STORE], app[DATABASE]
    body: dict = {"status": "ok", "worker": os.getpid(), "database": store.label}
    try:
        body["backlog"] = await database("backlog")  # arrivals waiting to be matched, the oldest's age
    except DatabaseUnavailable:
        body["status"], body["backlog"] = "database unavailable", None
    body["replica"] = store.replica.status() if store.replica is not None else None
    body["answers_last_minute"] = app[ANSWERS].summary()
    return (200 if body["status"] == "ok" else 503), body


async def health(request: web.Request) -> web.Response:
    """What an operator watches: the matching backlog, the replica's lag, this worker's
    latencies and 5xx over the last minute. No token: nothing in it is about anyone."""
    status, body = await _health(request.app)
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    """/health in Prometheus' text format."""
    status, body = await _health(request.app)
    lines = [f"cratesense_catalog_up {int(status == 200)}"]
    if body["backlog"] is not None:
        lines += [f"cratesense_catalog_backlog_waiting {body['backlog']['waiting']}",
                  f"cratesense_catalog_backlog_oldest_seconds {body['backlog']['oldest_seconds']}"]
    if body["replica"] is not None:
        lines.append(f"cratesense_catalog_replica_in_use {int(body['replica']['state'] == 'in use')}")
        if body["replica"]["lag_seconds"] is not None:
            lines.append(f"cratesense_catalog_replica_lag_seconds {body['replica']['lag_seconds']}")
    for route, figures in body["answers_last_minute"].items():
        label = f'route="{route}",worker="{body["worker"]}"'
        lines += [f"cratesense_catalog_answers_last_minute{{{label}}} {figures['count']}",
                  f"cratesense_catalog_answer_p50_ms{{{label}}} {figures['p50_ms']}",
                  f"cratesense_catalog_answer_p99_ms{{{label}}} {figures['p99_ms']}",
                  f"cratesense_catalog_answers_5xx_last_minute{{{label}}} {figures['errors_5xx']}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", status=status)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


OPENAPI = web.AppKey("openapi", bytes)
CONTRACT = web.AppKey("contract", str)


def make_app(store: Store, *, rate: float = 50.0, burst: float = 200.0, body_seconds: float = 30.0,
             threads: int | None = None) -> web.Application:
    """The v1 API over ``store``. ``threads``: how many store calls may run at once (default:
    4 on SQLite, whose one writer serializes the rest; the pool's size on PostgreSQL)."""
    # aiohttp's own limit is set above ours, so _body() answers oversized bodies as JSON
    app = web.Application(middlewares=[_errors_and_access_log], client_max_size=contract.MAX_BODY_BYTES + 1024)
    database = Database(store, threads or (10 if store.several_processes else 4))
    app[STORE] = store
    app[DATABASE] = database
    app[BODY_SECONDS] = body_seconds
    # shared limits on a database that several workers serve; this process's own otherwise
    app[LIMITER] = RateLimiter(database, rate, burst)
    app[GUESSES] = RateLimiter(database, rate=1.0, burst=10)
    app[SETTLER] = Settler(database)
    app[ACCEPTER] = Accepter(database)
    app[ANSWERS] = Answers()
    app.cleanup_ctx.append(_settling)
    app.router.add_post("/v1/contributors", register)
    app.router.add_post("/v1/observations", ingest)
    app.router.add_post("/v1/lookup", lookup)
    app.router.add_put("/v1/profile", put_profile)
    app.router.add_put("/v1/contributors/me", put_settings)
    app.router.add_delete("/v1/contributors/me/observations", delete_observations)
    app.router.add_get("/v1/contributors/me/export", export)
    app.router.add_get("/v1/changes", changes)
    app.router.add_get("/v1/recommendations", recommendations)
    app[OPENAPI] = json.dumps(document()).encode()
    app[CONTRACT] = hashlib.sha256(app[OPENAPI]).hexdigest()[:16]
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


async def _settling(app: web.Application):
    tasks = [asyncio.create_task(app[SETTLER].run(), name="catalog-settler")]
    replica = app[STORE].replica
    if replica is not None:
        tasks.append(asyncio.create_task(_watch_replica(app[DATABASE], replica.check_seconds),
                                         name="catalog-replica-watch"))
    yield
    for task in tasks:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    app[DATABASE].shutdown()  # waits for a call in flight: the store may be closed after this


async def _watch_replica(database: Database, every: float) -> None:
    """Measure the standby's lag every ``every`` seconds (ReadReplica logs what changes)."""
    while True:
        try:
            await database("check_replica")
        except Exception:  # the primary's trouble: its own log line comes from Database()
            log.debug("checking the read replica failed", exc_info=True)
        await asyncio.sleep(every)


async def _runner(store: Store, **limits) -> web.AppRunner:
    # auto_decompress off: _body() inflates gzip itself, under the size cap
    # lingering_time: after an early answer, read at most 1 s of a body nobody wants (slow clients)
    runner = web.AppRunner(make_app(store, **limits), access_log=None, auto_decompress=False, lingering_time=1.0)
    await runner.setup()
    return runner


async def start(store: Store, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False,
                sock=None, **limits) -> tuple[web.AppRunner, str]:
    """Serve ``store`` on host:port (0: any free port), or on an already bound ``sock``
    (several workers sharing one listening socket); ``reuse_port``: beside other processes
    on the same port (SO_REUSEPORT, the kernel balances). Returns the runner and the base URL."""
    runner = await _runner(store, **limits)
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    bound_host, bound = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
    url = f"http://{bound_host}:{bound}"
    log.info("catalog listening on %s (database %s)", url, store.label)
    return runner, url


async def start_unix(store: Store, path) -> web.AppRunner:
    """Serve ``store`` on a Unix socket created 0600 (the agent's embedded catalog; its only
    client is this agent, so the rate limit is set out of its way)."""
    runner = await _runner(store, rate=1000.0, burst=1000.0)
    if os.path.exists(path):
        os.unlink(path)
    old_umask = os.umask(0o177)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old_umask)
    return runner


async def serve(store: Store, host: str, port: int, stop: asyncio.Event, **options) -> None:
    runner, _ = await start(store, host, port, **options)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
