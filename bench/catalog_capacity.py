"""Open-loop capacity of the shared catalog (issue #28): the highest sustained observation rate.

    python bench/catalog_capacity.py [--configs sqlite:1,postgresql:1,postgresql:2,postgresql:2+replica]
                                     [--rates 100,200,400,...] [--step-seconds 15] [--batch 20]
                                     [--against CHECKOUT --against-configs sqlite:1 --rounds 2]

Observations *arrive at a set rate* (open loop: a request leaves at its scheduled moment whether
or not earlier ones were answered, and its latency counts from that moment), stepped up: each
step sends ``rate`` observations a second for ``--step-seconds``, as gzip'd batches of
``--batch`` from many contributors, and one look-up of 5 fingerprints per batch. Half of each
batch are encodes already in the catalog (another contributor's copy of a known recording), half
are new recordings. A step is *sustained* when ingest p99 < 200 ms, no request failed, the
generator kept its schedule, and the settle backlog stayed bounded (the oldest arrival waiting
at the step's end is younger than 5 s). The figure is the highest sustained rate. For each step:
latencies, the backlog, and CPU per observation of the catalog's processes and of the database
server's (PostgreSQL: pg_stat_statements gives statements per observation).

The catalog runs as `cratesense catalog serve` (``--against CHECKOUT``: that checkout's code, for
a before/after in one run); PostgreSQL is a throwaway server with fsync on (tests/pgserver.py),
and ``+replica`` adds a streaming standby (pg_basebackup -R) given as ``--read-db``. The load
generator shares the machine's cores with them: its own CPU is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import chromaprint
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from catalog import random_walks  # noqa: E402

P99_LIMIT_MS = 200.0
BACKLOG_LIMIT_S = 5.0
CONTRIBUTORS = 200


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def cpu_of(pids: set[int]) -> float:
    """CPU seconds (user + system) of these processes and their children, from /proc."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) in pids or int(fields[1]) in pids:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class Fingerprints:
    """Encoded 120 s fingerprints: new ones made on demand (numpy random walks), known ones kept."""

    def __init__(self, seed: int) -> None:
        self.generator = np.random.default_rng(seed)
        self.known: list[str] = []

    def new(self, count: int) -> list[str]:
        made: list[str] = []
        while len(made) < count:
            block = random_walks(self.generator, min(2000, count - len(made)))
            made += [chromaprint.encode_fingerprint(row.tolist(), 1).decode() for row in block]
        self.known += made
        return made


class Database:
    """The backlog (arrivals waiting, the oldest's age) read straight from the database, so the
    same probe works for any checkout's catalog."""

    def __init__(self, target) -> None:
        self.target = target

    def backlog(self) -> tuple[int, float]:
        sql = "SELECT COUNT(*), MIN(received_at) FROM arrivals"
        if isinstance(self.target, Path):
            with sqlite3.connect(f"file:{self.target}?mode=ro", uri=True, timeout=30) as db:
                waiting, oldest = db.execute(sql).fetchone()
        else:
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as db:
                waiting, oldest = db.execute(sql).fetchone()
        return waiting, (time.time() - oldest) if oldest else 0.0


def start_catalog(target, workers: int, read_db: str | None, checkout: Path | None, log: Path) -> subprocess.Popen:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port), "--db", str(target),
               "--workers", str(workers)] + (["--read-db", read_db] if read_db else [])
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd="/")
    server.port = port  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    answered = 0
    while answered < 4 * workers:  # every worker up: several answers in a row
        assert server.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/openapi.json", timeout=5):
                answered += 1
        except OSError:
            answered = 0
            time.sleep(0.2)
    time.sleep(1.0)
    return server


def bodies(contributors: list[str], prints: Fingerprints, rng: random.Random, count: int, batch: int):
    """``count`` (token, ingest body, look-up body) requests, built before the step's clock starts."""
    requests = []
    for _ in range(count):
        known = rng.sample(prints.known, batch // 2) if len(prints.known) >= batch else []
        chosen = known + prints.new(batch - len(known))
        observations = [{"id": secrets.token_hex(16), "fingerprint": {"chromaprint": fp, "duration": 180.0},
                         "metadata": {"artist": "Capacity", "title": f"T{hash(fp) % 100000}"},
                         "analysis": {"analyzer_version": "bench", "bpm": 120.0}} for fp in chosen]
        lookup = {"fingerprints": [{"chromaprint": fp, "duration": 180.0} for fp in rng.sample(chosen, 5)]}
        requests.append((rng.choice(contributors), gzip.compress(json.dumps({"observations": observations}).encode()),
                         json.dumps(lookup).encode()))
    return requests


async def step(url: str, requests: list, interval: float) -> dict:
    """Send ``requests`` on schedule (one every ``interval`` s), each an ingest and a look-up."""
    ingest_ms: list[float] = []
    lookup_ms: list[float] = []
    errors: dict[str, int] = {}
    late = [0.0]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one(due: float, token: str, ingest: bytes, lookup: bytes) -> None:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            late[0] = max(late[0], time.perf_counter() - due)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for kind, body, extra, times in (("ingest", ingest, {"Content-Encoding": "gzip"}, ingest_ms),
                                             ("lookup", lookup, {}, lookup_ms)):
                try:
                    async with session.post(url + ("/v1/observations" if kind == "ingest" else "/v1/lookup"), data=body,
                                            headers={**headers, **extra}) as response:
                        await response.read()
                        if response.status != 200:
                            errors[f"{kind} {response.status}"] = errors.get(f"{kind} {response.status}", 0) + 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors[f"{kind} {type(exc).__name__}"] = errors.get(f"{kind} {type(exc).__name__}", 0) + 1
                times.append(1000 * (time.perf_counter() - due))  # from the scheduled moment: open loop
                due = time.perf_counter()

        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(start + i * interval, *request) for i, request in enumerate(requests)))
        seconds = time.perf_counter() - start
    return {"ingest_p50_ms": percentile(ingest_ms, 0.5), "ingest_p99_ms": percentile(ingest_ms, 0.99),
            "lookup_p50_ms": percentile(lookup_ms, 0.5), "lookup_p99_ms": percentile(lookup_ms, 0.99),
            "errors": errors, "max_send_lag_ms": 1000 * late[0], "seconds": seconds}


def register(url: str, count: int) -> list[str]:
    tokens = []
    for _ in range(count):
        request = urllib.request.Request(url + "/v1/contributors", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30) as response:
            tokens.append(json.loads(response.read())["token"])
    return tokens


def statement_counts(server, target: str) -> tuple[int, list[tuple[int, float, str]]]:
    """pg_stat_statements of the catalog's database: total calls, and the top statements."""
    import psycopg

    name = target.split("@/", 1)[1].split("?", 1)[0]
    with psycopg.connect(server.url(), autocommit=True) as db:
        rows = db.execute(
            "SELECT calls, total_exec_time, query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s ORDER BY calls DESC", (name,)).fetchall()
    return sum(row[0] for row in rows), [(row[0], round(row[1], 1), " ".join(row[2].split())[:110]) for row in rows[:12]]


def reset_statements(server) -> None:
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as db:
        db.execute("SELECT pg_stat_statements_reset()")


def run_config(name: str, args, temp: Path, state: dict, checkout: Path | None) -> dict:
    backend, _, rest = name.partition(":")
    workers_text, _, extra = rest.partition("+")
    workers = int(workers_text)
    pg_pids: set[int] = set()
    read_db = None
    if backend == "sqlite":
        target = temp / f"capacity-{len(state['results'])}.sqlite"
    else:
        if state.get("pg") is None:
            from pgserver import PostgresServer

            state["pg"] = PostgresServer(fsync=True, settings={
                "shared_buffers": "512MB", "max_wal_size": "4GB", "shared_preload_libraries": "pg_stat_statements",
                "pg_stat_statements.max": "1000", "wal_level": "replica"}).start()
            with __import__("psycopg").connect(state["pg"].url(), autocommit=True) as db:
                db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        target = state["pg"].new_database("capacity")
        pg_pids.add(int((state["pg"].data / "postmaster.pid").read_text().split()[0]))
        if extra == "replica":
            if state.get("standby") is None:
                state["standby"] = state["pg"].standby()
            read_db = state["standby"].url_of(target)
            pg_pids.add(int((state["standby"].data / "postmaster.pid").read_text().split()[0]))
    label = f"{backend} x{workers}{' + replica' if read_db else ''}{' (' + checkout.name + ')' if checkout else ''}"
    print(f"== {label}", file=sys.stderr, flush=True)
    server = start_catalog(target, workers, read_db, checkout, temp / f"catalog-{len(state['results'])}.log")
    url = f"http://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    database = Database(target)
    rng = random.Random(28)
    prints = Fingerprints(seed=28)
    steps = []
    try:
        contributors = register(url, CONTRIBUTORS)
        prints.new(args.batch * 10)  # a few recordings known before the first step
        if args.warmup_seconds:  # connections, caches, the first statements' plans: not judged
            count = max(1, round(args.rates[0] * args.warmup_seconds / args.batch))
            asyncio.run(step(url, bodies(contributors, prints, rng, count, args.batch), args.batch / args.rates[0]))
            drain_started = time.monotonic()
            while database.backlog()[0] and time.monotonic() - drain_started < 60:
                time.sleep(0.2)
        for rate in args.rates:
            count = max(1, round(rate * args.step_seconds / args.batch))
            requests = bodies(contributors, prints, rng, count, args.batch)
            if backend != "sqlite":
                reset_statements(state["pg"])
            time.sleep(0.5)
            catalog_cpu, db_cpu, own_cpu = cpu_of({server.pid}), cpu_of(pg_pids) if pg_pids else 0.0, time.process_time()
            result = asyncio.run(step(url, requests, args.batch / rate))
            waiting, oldest = database.backlog()
            observations = count * args.batch
            result.update({
                "config": label, "rate": rate, "observations": observations,
                "backlog_waiting": waiting, "backlog_oldest_s": round(oldest, 2),
                "catalog_cpu_ms_per_obs": 1000 * (cpu_of({server.pid}) - catalog_cpu) / observations,
                "db_cpu_ms_per_obs": 1000 * ((cpu_of(pg_pids) if pg_pids else 0.0) - db_cpu) / observations,
                "generator_cpu_ms_per_obs": 1000 * (time.process_time() - own_cpu) / observations,
            })
            if backend != "sqlite":
                calls, top = statement_counts(state["pg"], target)
                result["statements_per_obs"] = calls / observations
                result["top_statements"] = top
            result["sustained"] = (result["ingest_p99_ms"] < P99_LIMIT_MS and not result["errors"]
                                   and oldest < BACKLOG_LIMIT_S and result["max_send_lag_ms"] < 100)
            steps.append(result)
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()
                              if k != "top_statements"}), flush=True)
            if not result["sustained"]:
                break
        drain_started = time.monotonic()
        while database.backlog()[0] and time.monotonic() - drain_started < 300:
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=60)
    sustained = [s for s in steps if s["sustained"]]
    return {"config": label, "checkout": str(checkout) if checkout else None, "steps": steps,
            "max_sustained_rate": max((s["rate"] for s in sustained), default=0)}


def plan(args) -> list[tuple[str, Path | None]]:
    """(config, checkout or None for this one) in the order they run: with ``--against``, each
    paired config before and after back to back (a changing load hits both sides alike), the
    order alternating by round."""
    if not args.against:
        return [(name, None) for name in args.configs.split(",")]
    paired = args.against_configs.split(",")
    runs: list[tuple[str, Path | None]] = []
    for round_ in range(args.rounds):
        for name in paired:
            pair = [(name, args.against), (name, None)]
            runs += pair[::-1] if round_ % 2 else pair
    return runs + [(name, None) for name in args.configs.split(",") if name not in paired]


def paired_ratios(results: list[dict]) -> list[str]:
    """After / before of the max sustained rate, per config and round (runs in ``plan`` order)."""
    lines, before = [], {}
    for result in results:
        config = result["config"].split(" (")[0]
        if result["checkout"]:
            before.setdefault(config, []).append(result["max_sustained_rate"])
    for config, rates in before.items():
        after = [r["max_sustained_rate"] for r in results if not r["checkout"] and r["config"] == config]
        pairs = [f"{a}/{b} = {a / b:.2f}" if b else f"{a}/{b}" for a, b in zip(after, rates)]
        lines.append(f"{config}: after/before max sustained obs/s per round: {', '.join(pairs)}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="sqlite:1,postgresql:1,postgresql:2,postgresql:2+replica")
    parser.add_argument("--rates", default="100,200,300,400,600,800,1000,1300,1600,2000,2500,3000",
                        type=lambda text: [int(x) for x in text.split(",")])
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--warmup-seconds", type=float, default=0.0,
                        help="a first step at the lowest rate, not judged (the first requests after a start pay "
                             "for connections and caches)")
    parser.add_argument("--against", type=Path, help="another checkout (e.g. main before #28) to measure in the same run")
    parser.add_argument("--against-configs", default="sqlite:1,postgresql:2")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --against: each of --against-configs this many times, before and after in "
                             "turn (which goes first alternates), for paired ratios; the other configs once, after")
    parser.add_argument("--json", type=Path, help="write every step's figures here")
    args = parser.parse_args()
    state: dict = {"results": []}
    load = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="cratesense-capacity-") as temp:
            runs = plan(args)
            for name, checkout in runs:
                state["results"].append(run_config(name, args, Path(temp), state, checkout))
    finally:
        for key in ("standby", "pg"):
            if state.get(key) is not None:
                state[key].stop()
    if args.json:
        args.json.write_text(json.dumps(state["results"], indent=1))
    print(f"\nload average at start: {load[0]:.2f}; steps of {args.step_seconds:g} s, batches of {args.batch}, "
          f"one look-up of 5 per batch; sustained = ingest p99 < {P99_LIMIT_MS:g} ms, no error, oldest waiting "
          f"arrival < {BACKLOG_LIMIT_S:g} s")
    print("| config | max sustained obs/s | at that rate: ingest p50/p99 ms | look-up p50/p99 ms | catalog CPU ms/obs "
          "| database CPU ms/obs | statements/obs | first failing step |")
    print("|---|---|---|---|---|---|---|---|")
    for result in state["results"]:
        best = max((s for s in result["steps"] if s["sustained"]), key=lambda s: s["rate"], default=None)
        failed = next((s for s in result["steps"] if not s["sustained"]), None)
        why = "-" if failed is None else (f"{failed['rate']}: p99 {failed['ingest_p99_ms']:.0f} ms, oldest waiting "
                                          f"{failed['backlog_oldest_s']:.1f} s, errors {sum(failed['errors'].values())}")
        if best is None:
            print(f"| {result['config']} | 0 | | | | | | {why} |")
            continue
        print(f"| {result['config']} | {best['rate']} | {best['ingest_p50_ms']:.0f} / {best['ingest_p99_ms']:.0f} | "
              f"{best['lookup_p50_ms']:.0f} / {best['lookup_p99_ms']:.0f} | {best['catalog_cpu_ms_per_obs']:.2f} | "
              f"{best['db_cpu_ms_per_obs']:.2f} | {best.get('statements_per_obs', float('nan')):.2f} | {why} |")
    for line in paired_ratios(state["results"]):
        print(line)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
