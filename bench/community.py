"""Better together, measured (issue #24): a community of real agents around one catalog, and
the recommender at community scale.

    python bench/community.py [--agents 12] [--scale 100,300,1000] [--skip-real] [--skip-scale]
                              [--lock /work/heavy.lock]

**Real agents** (``--agents`` processes of ``cratesense run``, one ``cratesense catalog serve``):
real recordings (Debian game soundtracks, one soundtrack = one taste cluster, plus a few
"hits" most DJs hold whatever their taste); each DJ likes one or two clusters and holds about
two thirds of each, a stray and most hits; each holder has its own encode (MP3, Opus, Vorbis,
AAC, FLAC at several bitrates, from the first 75 s), 40 % of the files without artist and title.
The agents join in three waves and sync every 30 s. After each wave, at each agent's first sync:
its untagged files filled right / wrong / empty, and how many of those whose tagged copy the
catalog already held were filled (the target: all). Then two syncs with nothing changed: the
requests each costs (a tap in front of the catalog counts them). Then each DJ's recommendations:
precision of the top R (a recording from the DJ's own clusters counts), against random picks and
the most-held recordings, and the AUC of the recommender's whole ranking.

**Scale** (no audio): ``tests/communitykit.SyntheticCommunity`` of 100-1,000 DJs (holdings with
taste clusters and popular hits, profiles computed from what each holds), built in a real
catalog; one in ten keeps its library to itself (profile only). The same figures, per kind of
DJ, and the time a recommendation takes. Plus what a steady library costs: the change feed and
the agent's due look-ups when nothing changed, on a 100,000-track library.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

TOPS = (3, 5)  # precision of the top R, for these R


# --- figures ----------------------------------------------------------------------------------

def precision(items: list, relevant, top: int | None = None) -> float:
    """The share of ``items`` that are relevant; with ``top``, of ``top`` slots (a shorter list's
    empty slots are misses)."""
    slots = top or len(items)
    return sum(1 for item in items[:slots] if relevant(item)) / slots if slots else float("nan")


def auc(ranked: dict, eligible: list, relevant) -> float:
    """P(a relevant eligible item ranks above an irrelevant one); unranked items tie below all."""
    scores = {item: ranked.get(item, float("-inf")) for item in eligible}
    good = [scores[item] for item in eligible if relevant(item)]
    bad = [scores[item] for item in eligible if not relevant(item)]
    if not good or not bad:
        return float("nan")
    wins = 0.0
    for g in good:
        for b in bad:
            wins += 1.0 if g > b else 0.5 if g == b else 0.0
    return wins / (len(good) * len(bad))


def mean(values) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def interval(values, rounds: int = 2000, seed: int = 1) -> tuple[float, float]:
    """A 95 % bootstrap interval of the mean over DJs."""
    values = [v for v in values if v == v]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    means = sorted(mean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds)]


def figures_line(label: str, ours, popular, chance, aucs, best) -> str:
    low, high = interval(ours)
    ratio = mean(ours) / mean(chance) if mean(chance) else float("nan")
    return (f"| {label} | {mean(ours):.2f} [{low:.2f}, {high:.2f}] | {mean(popular):.2f} | {mean(chance):.2f} | "
            f"{ratio:.1f}x | {mean(aucs):.2f} | {mean(best):.2f} |")


def figures_header(top: int) -> str:
    return (f"| DJs | precision@{top} (95 % CI) | most-held | random | ours / random | AUC | best possible |\n"
            "|---|---|---|---|---|---|---|")


def evaluate(rankings: dict, holdings: dict, holders: dict, relevant_for, top: int) -> tuple[list, list, list, list, list]:
    """Per DJ: precision of our top, of the most-held, of chance, our AUC, and the best any
    recommender could do (only so many eligible recordings are from the DJ's clusters).
    ``rankings``: DJ -> {item: score} (our whole ranking, best first when sorted); ``holdings``:
    DJ -> items it holds; ``holders``: item -> how many DJs hold it."""
    ours, popular, chance, aucs, best = [], [], [], [], []
    for dj, ranking in rankings.items():
        relevant = relevant_for(dj)
        eligible = [item for item, count in holders.items() if count >= 3 and item not in holdings[dj]]
        if not eligible:
            continue
        ours.append(precision(sorted(ranking, key=lambda item: -ranking[item]), relevant, top))
        popular.append(precision(sorted(eligible, key=lambda item: (-holders[item], str(item))), relevant, top))
        chance.append(precision(eligible, relevant))
        aucs.append(auc(ranking, eligible, relevant))
        best.append(min(top, sum(1 for item in eligible if relevant(item))) / top)
    return ours, popular, chance, aucs, best


# --- scale: a synthetic community, no audio ------------------------------------------------------

def scale(sizes: list[int], folder: Path, database: str | None) -> None:
    import chromaprint
    import msgspec

    from catalogkit import observation, random_fingerprint
    from communitykit import SyntheticCommunity
    from cratesense.catalog import contract, recommend
    from cratesense.catalog.store import Store

    print("\n## Recommendations at scale (synthetic holdings and profiles, no audio)\n")
    rows = []
    for size in sizes:
        community = SyntheticCommunity(size, size, clusters=max(6, size // 20), per_cluster=40, hits=8,
                                       holdings=(15, 40))
        rng = random.Random(size)
        prints = [(chromaprint.encode_fingerprint(random_fingerprint(rng), 1).decode(), 180.0)
                  for _ in community.cluster_of]
        target = database or str(folder / f"scale-{size}.sqlite")
        store = Store(target)
        started = time.perf_counter()
        ids, private = [], set(rng.sample(range(size), size // 10))  # one in ten keeps its library to itself
        for dj, held in enumerate(community.holdings):
            contributor = store.register()[0]
            ids.append(contributor)
            if dj not in private:
                items = [msgspec.convert(observation(prints[i], title=f"R{i}"), contract.Observation) for i in sorted(held)]
                store.accept(contributor, items)
            store.put_profile(contributor, msgspec.convert(community.profile(dj), contract.Profile))
        while store.settle(200):
            pass
        built = time.perf_counter() - started
        with store.backend.reading() as db:
            number = {recording: int(title[1:]) for recording, title in db.execute("SELECT id, title FROM recordings")}
        holders: dict[int, int] = {}
        for dj, held in enumerate(community.holdings):
            if dj not in private:
                for item in held:
                    holders[item] = holders.get(item, 0) + 1
        sample = sorted(rng.sample(range(size), min(size, 120)))
        rankings = {"contributing": {}, "profile only": {}}
        times = []
        for dj in sample:
            began = time.perf_counter()
            found = recommend.recommend(store, ids[dj], limit=10**6)
            times.append(time.perf_counter() - began)
            kind = "profile only" if dj in private else "contributing"
            rankings[kind][dj] = {number[r["recording"]]: r["weight"] for r in found}
        holdings = {dj: (set() if dj in private else community.holdings[dj]) for dj in range(size)}
        for kind, ranking in rankings.items():
            if ranking:
                rows.append((f"{size} ({kind}, {len(ranking)} asked)", {top: evaluate(
                    ranking, holdings, holders, lambda dj: lambda item: community.relevant(dj, item), top) for top in TOPS}))
        times.sort()
        print(f"{size} DJs: built in {built:.0f} s ({sum(len(h) for d, h in holdings.items())} observations); "
              f"a recommendation p50 {1000 * statistics.median(times):.0f} ms, "
              f"p95 {1000 * times[int(0.95 * (len(times) - 1))]:.0f} ms (whole ranking)", flush=True)
        store.close()
    for top in TOPS:
        print()
        print(figures_header(top))
        for label, figures in rows:
            print(figures_line(label, *figures[top]))


ENCODES = (  # (extension, Debian ffmpeg's codec arguments): what DJs' files are made with
    ("mp3", ["-c:a", "libmp3lame", "-b:a", "320k"]),
    ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    ("opus", ["-c:a", "libopus", "-b:a", "96k"]),
    ("ogg", ["-c:a", "libvorbis", "-q:a", "4"]),
    ("m4a", ["-c:a", "aac", "-b:a", "160k"]),
    ("flac", ["-c:a", "flac"]),
)
SECONDS = 75  # each copy is the recording's first 75 s (the fingerprint reads 120 s at most)
UNTAGGED = 0.4
SHARE = 2 / 3  # of each of its clusters a DJ holds this share


class Holding:
    """One DJ's copy of one recording: which, how encoded, whether tagged, its file."""

    def __init__(self, recording: int, encode: int, tagged: bool, path: Path) -> None:
        self.recording, self.encode, self.tagged, self.path = recording, encode, tagged, path


def community_plan(count: int, clusters: int, per_cluster: int):
    """Who likes and holds what (deterministic: the same plan every run): the random generator
    (the encodes and tags are drawn from it next), the recordings (cluster, artist, source file;
    cluster -1: a hit), each DJ's clusters and holdings."""
    from soundtracks import DEVELOPMENT, HELD_OUT, soundtrack

    rng = random.Random(24)
    recordings: list[tuple[int, str, Path]] = []
    for package, under in [*DEVELOPMENT.items(), *HELD_OUT.items()]:
        cluster = len({c for c, _, _ in recordings if c >= 0})
        wanted = per_cluster if cluster < clusters else 4
        found = soundtrack(package, under, limit=wanted)
        if len(found) < wanted:
            continue
        recordings += [(cluster if cluster < clusters else -1, package, path) for path in found]
        if cluster >= clusters:
            break
    hits = [i for i, (c, _, _) in enumerate(recordings) if c < 0]
    by_cluster = [[i for i, (c, _, _) in enumerate(recordings) if c == cluster] for cluster in range(clusters)]
    tastes: list[set[int]] = []
    holdings: list[set[int]] = []
    for _ in range(count):
        taste = set(rng.sample(range(clusters), rng.choice((1, 2))))
        held = set()
        for cluster in taste:
            held.update(rng.sample(by_cluster[cluster], round(len(by_cluster[cluster]) * SHARE)))
        others = [i for cluster in range(clusters) if cluster not in taste for i in by_cluster[cluster]]
        if others:
            held.add(rng.choice(others))  # a stray
        held.update(i for i in hits if rng.random() < 0.7)
        tastes.append(taste)
        holdings.append(held)
    return rng, recordings, tastes, holdings


def plan_only(count: int, clusters: int, per_cluster: int) -> None:
    """The plan's baselines without running anything: random, most-held, the best possible."""
    _, recordings, tastes, holdings = community_plan(count, clusters, per_cluster)
    holders = {i: sum(i in held for held in holdings) for i in range(len(recordings))}
    for top in TOPS:
        _, popular, chance, _, best = evaluate({dj: {} for dj in range(count)}, dict(enumerate(holdings)), holders,
                                               lambda dj: lambda item: item >= 0 and recordings[item][0] in tastes[dj], top)
        print(f"plan of {count} DJs, top {top}: most-held {mean(popular):.2f}, random {mean(chance):.2f}, "
              f"best possible {mean(best):.2f}")


def real_agents(count: int, clusters: int, per_cluster: int, folder: Path) -> None:
    from soundtracks import CACHE, debian_ffmpeg

    from agentproc import AgentProcess, write_config
    from communitykit import CatalogProcess, CatalogTap, token_of
    from cratesense.catalog import recommend
    from cratesense.catalog.store import Store

    rng, recordings, tastes, holdings = community_plan(count, clusters, per_cluster)
    hits = [i for i, (c, _, _) in enumerate(recordings) if c < 0]
    print(f"\n## {count} real agents, one catalog\n\n{len(recordings)} recordings: {clusters} soundtracks of "
          f"{per_cluster} (the taste clusters) and {len(hits)} hits most DJs hold; copies of the first {SECONDS} s, "
          f"a different encode per holder, {round(100 * UNTAGGED)} % untagged.", flush=True)
    encodes_dir = CACHE / "community"
    encodes_dir.mkdir(parents=True, exist_ok=True)
    homes = []
    agents_copies: list[list[Holding]] = []
    for dj, held in enumerate(holdings):
        home = folder / f"dj{dj:02d}"
        music = home / "music"
        music.mkdir(parents=True)
        homes.append(home)
        copies = []
        for n, recording in enumerate(sorted(held)):
            encode = rng.randrange(len(ENCODES))
            tagged = rng.random() >= UNTAGGED
            extension, codec = ENCODES[encode]
            _, artist, source = recordings[recording]
            # named by the source itself (an index into the plan named another recording's encode
            # once the plan changed: the cache then held files whose music and tags were another's)
            cached = encodes_dir / f"{artist}--{source.stem}-{encode}-{'t' if tagged else 'u'}.{extension}"
            if not cached.exists():
                tags = ["-metadata", f"artist={artist}", "-metadata", f"title={source.stem}"] if tagged else []
                debian_ffmpeg("-i", str(source), "-t", str(SECONDS), "-map_metadata", "-1", "-vn", *codec, *tags,
                              str(cached))
            path = music / f"{n:03d}.{extension}"  # the name says nothing: only tags, or the catalog, can
            shutil.copy(cached, path)
            copies.append(Holding(recording, encode, tagged, path))
        agents_copies.append(copies)
    catalog = CatalogProcess(folder / "catalog.sqlite", folder / "catalog.log")
    tap = CatalogTap(catalog.url)
    agents = []
    for home in homes:
        write_config(home, home / "music", sync={"quiet_seconds": 0.5, "catalog_url": tap.url, "interval_minutes": 0.5})
        agents.append(AgentProcess(home))
    waves = [list(range(count))[i::3] for i in range(3)]
    running: list[int] = []
    tagged_at_catalog: set[int] = set()
    fill_rows, request_rows = [], []

    def wait_next_sync(dj: int, after: float) -> None:
        agents[dj].wait_for(lambda s: (s["last_sync_at"] or 0) > after and not s["syncing"], 240,
                            "its next sync")

    def counts(dj: int):
        token = token_of(homes[dj], tap.url)
        return tap.requests(token) if token else None

    try:
        for number, wave in enumerate(waves, start=1):
            for dj in wave:
                agents[dj].start(wait=False)
            for dj in wave:
                agents[dj].wait_for(lambda s, dj=dj: s["tracks"] == len(holdings[dj]) and s["queued"] + s["analyzing"] == 0
                                    and s["waiting_to_sync"] == 0 and s["last_sync_at"] is not None and not s["syncing"],
                                    900, f"dj {dj} to analyze and sync")
            running += wave
            tagged_at_catalog |= {c.recording for dj in wave for c in agents_copies[dj] if c.tagged}
            mark = time.time()
            before = {dj: counts(dj) for dj in running}
            for dj in running:
                wait_next_sync(dj, mark)
            spent = {dj: counts(dj) - before[dj] for dj in running}
            right = wrong = empty = fillable = filled = untagged = 0
            for dj in running:
                rows = {Path(row["path"]).name: row for row in json.loads(agents[dj].cli("tracks", "--json").stdout)["tracks"]}
                for copy in agents_copies[dj]:
                    if copy.tagged:
                        continue
                    untagged += 1
                    row = rows.get(copy.path.name, {})
                    _, artist, source = recordings[copy.recording]
                    if row.get("title") is None:
                        empty += 1
                    elif row.get("title") == source.stem and row.get("artist") == artist:
                        right += 1
                    else:
                        wrong += 1
                    if copy.recording in tagged_at_catalog:
                        fillable += 1
                        filled += row.get("title") == source.stem and row.get("artist") == artist
            fill_rows.append((number, len(running), untagged, right, wrong, empty, fillable, filled))
            request_rows.append((f"after wave {number}", _per_sync(spent)))
            print(f"wave {number}: {len(running)} agents; untagged {untagged}: right {right}, wrong {wrong}, "
                  f"empty {empty}; the catalog had a tagged copy of {fillable}: {filled} filled", flush=True)
        for steady in (1, 2):  # nothing changes any more
            mark = time.time()
            before = {dj: counts(dj) for dj in running}
            for dj in running:
                wait_next_sync(dj, mark)
            request_rows.append((f"steady sync {steady}", _per_sync({dj: counts(dj) - before[dj] for dj in running})))
        answers = {dj: json.loads(agents[dj].cli("recommendations", "--json", timeout=120).stdout) for dj in running}
        contributor = {dj: json.loads((homes[dj] / "data" / "cratesense" / "identity.json").read_text())
                       [f"catalog:{tap.url}"]["contributor_id"] for dj in running}
        # the catalog's recording ids -> our recordings, from every agent's journal
        votes: dict[int, dict[int, int]] = {}
        for dj in running:
            by_name = {c.path.name: c.recording for c in agents_copies[dj]}
            with agents[dj].journal() as db:
                for path, recording_id in db.execute(
                        "SELECT f.path, c.recording_id FROM files f JOIN consensus c ON c.content_key = f.content_key "
                        "WHERE c.recording_id IS NOT NULL"):
                    ours = by_name.get(os.fsdecode(path).rsplit("/", 1)[-1])
                    if ours is not None:
                        votes.setdefault(recording_id, {}).setdefault(ours, 0)
                        votes[recording_id][ours] += 1
        ours_of = {rid: max(v, key=v.get) for rid, v in votes.items()}
    except BaseException:
        tap.close()
        catalog.stop()
        raise
    finally:
        for agent in agents:
            agent.stop()
    store = Store(folder / "catalog.sqlite")
    try:
        rankings = {dj: {ours_of.get(r["recording"], -r["recording"]): r["weight"]
                         for r in recommend.recommend(store, contributor[dj], limit=10**6)} for dj in running}
    finally:
        store.close()
        tap.close()
        catalog.stop()
    first = {dj: [ours_of.get(r["recording"], -r["recording"]) for r in answers[dj]["recommendations"][:5]]
             for dj in running}
    if any(list(rankings[dj])[:5] != first[dj] for dj in running):
        print("note: the API's top differs from the store's whole ranking for some DJs (ties)")
    holders = {i: sum(i in held for held in holdings) for i in range(len(recordings))}
    saved = CACHE / "community-last.json"  # the raw outcome, to compute other figures from
    saved.write_text(json.dumps({"rankings": {dj: list(ranking.items()) for dj, ranking in rankings.items()},
                                 "holdings": [sorted(held) for held in holdings], "tastes": [sorted(t) for t in tastes],
                                 "clusters": [c for c, _, _ in recordings], "fill_rows": fill_rows,
                                 "request_rows": request_rows}))
    reasons = sorted({r["reason"] for dj in running for r in answers[dj]["recommendations"][:5]})
    print("\n### Gaps filled, at each agent's first sync after each wave joined\n")
    print("| after wave | agents | untagged files | right | wrong | empty | with a tagged copy at the catalog | of those filled |")
    print("|---|---|---|---|---|---|---|---|")
    for row in fill_rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    print("\n### Requests per sync (all agents: mean / max per agent)\n")
    print("| sync | change feed | look-ups | observations | profile | total |")
    print("|---|---|---|---|---|---|")
    for label, per in request_rows:
        print(f"| {label} | " + " | ".join(per) + " |")
    for top in TOPS:
        print(f"\n### Recommendations ({len(running)} DJs, precision of the top {top})\n")
        print(figures_header(top))
        print(figures_line(str(len(running)), *evaluate(
            rankings, dict(enumerate(holdings)), holders,
            lambda dj: lambda item: item >= 0 and recordings[item][0] in tastes[dj], top)))
    print("\nreasons given, e.g.: " + "; ".join(reasons[:4]))


def _per_sync(spent: dict) -> list[str]:
    """Mean / max per agent of each kind of request in one sync."""
    kinds = {"change feed": "GET /v1/changes", "look-ups": "POST /v1/lookup", "observations": "POST /v1/observations",
             "profile": "PUT /v1/profile"}
    cells = []
    for route in kinds.values():
        values = [counter.get(route, 0) for counter in spent.values()]
        cells.append(f"{mean(values):.1f} / {max(values)}")
    totals = [sum(counter.values()) for counter in spent.values()]
    cells.append(f"{mean(totals):.1f} / {max(totals)}")
    return cells


# --- a steady library at scale: what a sync costs when nothing changed -----------------------------

def steady(folder: Path, held: int = 100_000, elsewhere: int = 1_000) -> None:
    """A library of ``held`` tracks, all known to the catalog (rows written as settling and the
    agent write them: no audio, no matching), synced by a real ``Syncer`` to a real catalog
    server behind a tap: what each sync costs when nothing changed, and when ``elsewhere`` of
    other DJs' recordings and 10 of ours changed. Also the change feed from the start (a first
    sync after an upgrade)."""
    import asyncio

    import aiohttp

    from communitykit import CatalogTap
    from cratesense.analysis.model import Consensus, encode_consensus
    from cratesense.catalog import follow
    from cratesense.catalog.server import start
    from cratesense.catalog.store import Store
    from cratesense.daemon.identity import Identity
    from cratesense.daemon.journal import Journal
    from cratesense.daemon.journal_io import JournalIO
    from cratesense.daemon.sync import Syncer
    from trackkit import track_analysis

    store = Store(folder / "steady.sqlite")
    (me, token), other = store.register(), store.register()[0]
    now = time.time()
    total = held + elsewhere
    with store._transaction() as db:
        db.executemany("INSERT INTO recordings (id, updated_at, contributors, observations, derived_observations, changed) "
                       "VALUES (?, ?, 1, 1, 1, 1)", [(r, now) for r in range(1, total + 1)])
        db.executemany("INSERT INTO fingerprints (id, recording, items, terms, duration) VALUES (?, ?, ?, ?, 180.0)",
                       [(r, r, b"\0\0\0\0", b"") for r in range(1, total + 1)])
        db.executemany("INSERT INTO observations (id, contributor, recording, fingerprint, fingerprint_duration, "
                       "analyzer_version, received_at) VALUES (?, ?, ?, ?, 180.0, 'bench', ?)",
                       [(f"{r:032x}", me if r <= held else other, r, r, now) for r in range(1, total + 1)])
        db.execute("UPDATE counters SET value = ? WHERE counter IN ('recording', 'fingerprint')", (total,))
    began = time.perf_counter()
    cursor, pages, first = {"change": 0, "recording": None}, 0, 0
    while True:
        answer = follow.changes(store, me, cursor["change"], cursor["recording"])
        pages, first, cursor = pages + 1, first + len(answer["changes"]), answer["cursor"]
        if not answer["more"]:
            break
    from_start = time.perf_counter() - began

    # the agent's journal: the same tracks, each followed in its recording
    track = track_analysis(chromaprint="", duration=180.0)
    with Journal(folder / "journal.sqlite") as journal:
        from cratesense.analysis.model import encode_track

        encoded = encode_track(track).decode()
        with journal._transaction() as db:
            db.executemany("INSERT INTO tracks VALUES (?, ?, ?, ?)",
                           [(f"{r:032x}", encoded, track.analyzer_version, now) for r in range(1, held + 1)])
            db.executemany("INSERT INTO files (path, device, inode, size, mtime_ns, content_key, state, updated_at, "
                           "analyzer_version) VALUES (?, 1, ?, 1, 1, ?, 'analyzed', 0, ?)",
                           [(f"/music/{r:06d}.flac".encode(), r, f"{r:032x}", track.analyzer_version)
                            for r in range(1, held + 1)])
            db.executemany("INSERT INTO consensus (content_key, recording, looked_up_at, recording_id, attempts, "
                           "next_lookup_at) VALUES (?, ?, ?, ?, 0, NULL)",
                           [(f"{r:032x}", encode_consensus(Consensus(recording=r, contributors=1)).decode(), now, r)
                            for r in range(1, held + 1)])
        journal.rebuild_library()
        journal.rebuild_profile()
        _, revision = journal.profile()
        journal.set_setting("catalog_contribute_sent", True)
        journal.set_setting("catalog_profile_sent", revision)
    rows = []

    async def syncs() -> None:
        runner, url = await start(store)
        tap = CatalogTap(url)
        identity = Identity(folder / "identity.json")
        identity.set(f"catalog:{tap.url}", {"contributor_id": me, "token": token})
        io = JournalIO(folder / "journal.sqlite")
        await io.open()
        await io.write(lambda journal: journal.set_setting(
            "catalog_changes", {"contributor": me, "change": cursor["change"], "recording": None}))
        syncer = Syncer(io, identity, tap.url, aiohttp.ClientSession, label=tap.url)
        task = asyncio.create_task(syncer.run())
        try:
            for label in ("nothing changed", "nothing changed", "nothing changed",
                          f"{elsewhere:,} others' and 10 of ours changed"):
                if label.startswith(f"{elsewhere:,}"):
                    with store._transaction() as db:
                        store._stamp(db, list(range(held + 1, total + 1)) + list(range(1, 11)))
                before = tap.requests(token)
                followed = syncer.followed_total
                began = time.perf_counter()
                await syncer.sync_now(timeout=600)
                spent = tap.requests(token) - before
                rows.append((label, sum(spent.values()), ", ".join(f"{n} {route}" for route, n in sorted(spent.items())),
                             syncer.followed_total - followed, time.perf_counter() - began))
            assert syncer.status()["last_sync_error"] is None, syncer.status()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await io.close()
            tap.close()
            await runner.cleanup()

    asyncio.run(syncs())
    store.close()
    print(f"\n## A steady library of {held:,} tracks (SQLite catalog, a real Syncer through a tap)\n")
    print("| sync | requests | which | tracks brought news of | wall time (agent and catalog) |")
    print("|---|---|---|---|---|")
    print(f"| the change feed from the start (an upgrade's first sync; the catalog only) | {pages} | GET /v1/changes | "
          f"{first:,} | {from_start:.1f} s |")
    for label, count, which, followed, seconds in rows:
        print(f"| {label} | {count} | {which} | {followed} | {1000 * seconds:.0f} ms |")


# --- main ------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--per-cluster", type=int, default=8)
    parser.add_argument("--scale", default="100,300,1000", help="community sizes for the synthetic part")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-steady", action="store_true")
    parser.add_argument("--plan-only", action="store_true", help="the real part's baselines, without agents")
    parser.add_argument("--db", help="a postgresql:// URL for the scale part (default: SQLite files)")
    parser.add_argument("--lock", help="hold this file's lock (flock) while measuring")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args()
    lock = None
    if args.lock:
        import fcntl

        lock = open(args.lock, "a")
        fcntl.flock(lock, fcntl.LOCK_EX)
    if args.plan_only:
        plan_only(args.agents, args.clusters, args.per_cluster)
        return 0
    folder = Path(tempfile.mkdtemp(prefix="cratesense-community-"))
    try:
        if not args.skip_real:
            real_agents(args.agents, args.clusters, args.per_cluster, folder)
        if not args.skip_steady:
            steady(folder)
        if not args.skip_scale:
            scale([int(s) for s in args.scale.split(",")], folder, args.db)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
