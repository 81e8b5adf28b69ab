"""A community of real agents around one real catalog: the catalog as its own process
(``cratesense catalog serve``), a tap in front of it that counts every request by agent and
route, and can make the catalog answer badly (a boundary we do not own: a broken or hostile
catalog). Used by tests/test_community.py and bench/community.py."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CatalogProcess:
    """``cratesense catalog serve`` on a free port of 127.0.0.1, over ``database``."""

    def __init__(self, database: Path | str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(self.port), "--db", str(database)],
            stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the catalog exited ({self.process.returncode}); see {log}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("the catalog did not start listening")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._log.close()


class CatalogTap:
    """A proxy in front of the catalog at ``upstream``, on its own thread: ``counts[token]`` is
    a Counter of "METHOD /route" per bearer token; ``answer_badly[route]``, when set, replaces
    the catalog's answer to that route (a function of the real answer's JSON -> (status, body
    bytes)); ``down`` closes every connection (a catalog that does not answer)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.counts: dict[str, Counter] = {}
        self.answer_badly: dict[str, Callable[[dict], tuple[int, bytes]]] = {}
        self.down = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name="catalog-tap")
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the tap did not start")

    def requests(self, token: str) -> Counter:
        with self._lock:
            return Counter(self.counts.get(token, Counter()))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        session = aiohttp.ClientSession(auto_decompress=False)

        async def tap(request: web.Request) -> web.StreamResponse:
            if self.down:
                request.transport.close()
                return web.Response(status=503)
            body = await request.read()
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            route = f"{request.method} {request.path}"
            with self._lock:
                self.counts.setdefault(token, Counter())[route] += 1
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("authorization", "content-type", "content-encoding")}
            async with session.request(request.method, self.upstream + request.path_qs, data=body, headers=headers) as answer:
                raw = await answer.read()
                status = answer.status
                encoding = answer.headers.get("Content-Encoding")
            bad = self.answer_badly.get(request.path)
            if bad is not None and status == 200:
                text = gzip.decompress(raw) if encoding == "gzip" else raw
                status, raw = bad(json.loads(text))
                encoding = None
            response = web.Response(body=raw, status=status, content_type="application/json")
            if encoding:
                response.headers["Content-Encoding"] = encoding
            return response

        app = web.Application(client_max_size=8 << 20)
        app.router.add_route("*", "/{tail:.*}", tap)
        runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await session.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def token_of(home: Path, catalog_url: str) -> str | None:
    """An agent's bearer token at ``catalog_url`` (its identity file)."""
    path = home / "data" / "cratesense" / "identity.json"
    if not path.exists():
        return None
    return (json.loads(path.read_text()).get(f"catalog:{catalog_url.rstrip('/')}") or {}).get("token")


# --- a synthetic community: holdings and taste profiles, no audio (tests, bench/community.py) ---

class SyntheticCommunity:
    """``djs`` DJs with a taste for one or two of ``clusters`` clusters of recordings: each holds a
    share of its clusters' recordings (some far more popular than others), a few strays from other
    clusters, and some of the ``hits`` everybody holds whatever their taste. Each recording has
    facts drawn from its cluster (tempo, key, loudness, a sound embedding), so each DJ's taste
    profile is computed from what it holds, as an agent computes it."""

    def __init__(self, seed: int, djs: int, *, clusters: int = 6, per_cluster: int = 40, hits: int = 6,
                 holdings: tuple[int, int] = (15, 40), stray: float = 0.1) -> None:
        import random

        from cratesense.analysis.constants import EMBEDDING_LENGTH

        rng = random.Random(seed)
        self.clusters = clusters
        self.cluster_of: list[int] = []  # per recording; -1: a hit, no cluster's own
        self.facts: list[tuple[float, str, float, list[float]]] = []
        for cluster in range(clusters):
            bpm = rng.uniform(85, 175)
            keys = [f"{rng.randint(1, 12)}{rng.choice('AB')}" for _ in range(3)]
            lufs = rng.uniform(-16, -6)
            centre = _unit([rng.gauss(0, 1) for _ in range(EMBEDDING_LENGTH)])
            for _ in range(per_cluster):
                self.cluster_of.append(cluster)
                self.facts.append((bpm * rng.uniform(0.95, 1.05), rng.choice(keys), lufs + rng.gauss(0, 1.5),
                                   _unit([c + 0.8 * rng.gauss(0, 1) / EMBEDDING_LENGTH ** 0.5 for c in centre])))
        for _ in range(hits):
            self.cluster_of.append(-1)
            self.facts.append((rng.uniform(90, 170), f"{rng.randint(1, 12)}{rng.choice('AB')}", rng.uniform(-12, -6),
                               _unit([rng.gauss(0, 1) for _ in range(EMBEDDING_LENGTH)])))
        by_cluster = [[i for i, c in enumerate(self.cluster_of) if c == cluster] for cluster in range(clusters)]
        hit_items = [i for i, c in enumerate(self.cluster_of) if c == -1]
        # within a cluster some recordings are far more popular than others (Zipf-like weights)
        appeal = {i: 1.0 / (rank + 1) ** 0.8 for cluster in by_cluster for rank, i in enumerate(rng.sample(cluster, len(cluster)))}
        self.taste: list[set[int]] = []
        self.holdings: list[set[int]] = []
        for _ in range(djs):
            taste = set(rng.sample(range(clusters), rng.choice((1, 2))))
            size = rng.randint(*holdings)
            pool = [i for cluster in taste for i in by_cluster[cluster]]
            own = set()
            while len(own) < min(size, len(pool)):
                own.add(rng.choices(pool, weights=[appeal[i] for i in pool])[0])
            others = [i for cluster in range(clusters) if cluster not in taste for i in by_cluster[cluster]]
            own.update(rng.sample(others, min(len(others), round(stray * size))))
            own.update(i for i in hit_items if rng.random() < 0.7)
            self.taste.append(taste)
            self.holdings.append(own)

    def relevant(self, dj: int, recording: int) -> bool:
        return self.cluster_of[recording] in self.taste[dj]

    def profile(self, dj: int) -> dict:
        """The taste profile an agent holding ``dj``'s recordings sends."""
        from cratesense.daemon.profile import TrackTaste, taste_profile

        return taste_profile([TrackTaste(*self.facts[i]) for i in sorted(self.holdings[dj])])


def _unit(vector: list[float]) -> list[float]:
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [max(-1.0, min(1.0, v / norm)) for v in vector]
