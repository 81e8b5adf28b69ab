"""Helpers for catalog tests: real fingerprints of real encodes, a real server on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import random
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.catalog.server import start
from cratesense.catalog.store import Store

SR = 44100
ENCODES = {"flac": None, "mp3": 192_000, "ogg": None, "opus": 96_000, "m4a": 128_000}


def make_fingerprints(folder: Path) -> dict[tuple[int, str], tuple[str, float]]:
    """(source, encode) -> (chromaprint, duration) for 5 different 30 s tracks, each in
    several formats, plus a 64 kb/s MP3, a 32 kb/s Opus and a 3 s head cut of source 0."""
    from audiogen import encode, fingerprintable_track  # here: benchmarks import this module lightly
    result = {}
    for source in range(5):
        samples = fingerprintable_track(source, seconds=30, pattern=("four", "breakbeat")[source % 2])
        encodes = dict(ENCODES) if source == 0 else {"flac": None}
        for name, bitrate in encodes.items():
            path = encode(samples, SR, folder / f"{source}.{name}", bitrate=bitrate)
            result[(source, name)] = _fingerprint(path)
        if source == 0:
            result[(0, "mp3-64k")] = _fingerprint(encode(samples, SR, folder / "0-64k.mp3", bitrate=64_000))
            result[(0, "opus-32k")] = _fingerprint(encode(samples, SR, folder / "0-32k.opus", bitrate=32_000))
            result[(0, "cut-3s")] = _fingerprint(encode(samples[:, 3 * SR :], SR, folder / "0-cut.flac"))
    return result


def random_fingerprint(rng: random.Random, length: int = 948) -> list[int]:
    """A synthetic-but-realistic raw fingerprint (120 s = 948 items): a random walk where each
    item differs from the previous one in about 5 bits, as consecutive Chromaprint items do."""
    generator = np.random.default_rng(rng.getrandbits(64))
    bits = generator.integers(0, 32, size=(length, 5), dtype=np.uint32)
    masks = np.bitwise_or.reduce(np.left_shift(np.uint32(1), bits), axis=1).astype(np.uint32)
    masks[0] = generator.integers(0, 2**32, dtype=np.uint64)
    return np.bitwise_xor.accumulate(masks).tolist()


def _fingerprint(path: Path) -> tuple[str, float]:
    from cratesense.analysis.pipeline import analyze_file

    track = analyze_file(path, descriptors=False)
    return track.fingerprint.chromaprint, track.fingerprint.duration


def observation(fingerprint: tuple[str, float], *, id: str | None = None, **fields) -> dict:
    """A valid observation; ``fields`` set metadata.* or analysis.* by name."""
    chromaprint, duration = fingerprint
    body = {
        "id": id or secrets.token_hex(16),
        "fingerprint": {"chromaprint": chromaprint, "duration": duration},
        "metadata": {"artist": None, "title": None, "album": None, "isrc": None, "catalog_number": None,
                     "duration": duration},
        "analysis": {"analyzer_version": ANALYZER_VERSION, "bpm": None, "key": None, "camelot": None,
                     "loudness_lufs": None, "embedding": None},
    }
    for name, value in fields.items():
        section = "metadata" if name in body["metadata"] else "analysis"
        body[section][name] = value
    return body


class Client:
    """One agent's view of the catalog: its token and plain HTTP calls."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url, self.token = session, url, None

    async def register(self) -> Client:
        status, body = await self.call("POST", "/v1/contributors", auth=False)
        assert status == 201, body
        self.token, self.id = body["token"], body["contributor_id"]
        return self

    async def call(self, method: str, path: str, body=None, *, auth: bool = True, gzip_body: bool = False,
                   raw: bytes | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if gzip_body and data is not None:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.url + path, data=data, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def ingest(self, observations: list[dict], **options):
        return await self.call("POST", "/v1/observations", {"observations": observations}, **options)


def query(store: Store, sql: str, params=()) -> list[tuple]:
    """Rows of a read-only query on either backend (``?`` placeholders)."""
    with store.backend.reading() as db:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]


async def serve_every_path(handler, *, max_body: int = 4 << 20) -> tuple[web.AppRunner, str]:
    """``handler`` answering every method and path on 127.0.0.1 (a tap or a stand-in in front of
    a real catalog; bodies as sent, gzip'd or not): its runner and URL."""
    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@asynccontextmanager
async def catalog_server(target: Path | str, *, store_options: dict | None = None, **limits):
    """A real catalog server on 127.0.0.1 over ``target`` (a SQLite file or a PostgreSQL URL):
    (store, url)."""
    store = Store(target, **(store_options or {}))
    runner, url = await start(store, **limits)
    try:
        yield store, url
    finally:
        await runner.cleanup()
        store.close()
