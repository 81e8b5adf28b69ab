"""The ``cratesense`` command line: the edge where errors become one line and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cratesense import __version__, cli_dj
from cratesense.errors import CrateSenseError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some files failed
EXIT_ERROR = 2  # the command could not run (a bad flag or query, a broken setup)
EXIT_NOT_RUNNING = 3  # the command needs the agent, and it is not running (NotRunningError.exit_code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.handler(args)
    except CrateSenseError as exc:
        if args.debug:
            raise
        print(f"cratesense: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cratesense: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cratesense ... | head`: the reader has all it wanted
        sys.stderr.close()
        return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """A bad flag or value is one line (and exit 2), not a usage dump."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cratesense",
        description="CrateSense knows every track on your disk: fingerprints, tags, tempo, key and "
        "loudness, derived locally. Only derived data ever leaves the machine.",
    )
    parser.add_argument("--version", action="version", version=f"cratesense {__version__}")
    parser.add_argument("--debug", action="store_true", help="show debug logs and full tracebacks")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    analyze = commands.add_parser(
        "analyze",
        help="analyze audio files or folders and print the results",
        description="Analyze audio files (folders are searched recursively for audio files) and "
        "print one JSON object per track on standard output. Files that fail are listed at the "
        "end on standard error, and the exit code is then 1.",
    )
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="audio file or folder")
    analyze.add_argument("--table", action="store_true", help="print a table instead of JSON lines")
    analyze.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="parallel analysis processes (default: all cores)"
    )
    analyze.add_argument(
        "--timeout", type=float, default=300.0, help="per-file time limit in seconds (default: 300)"
    )
    analyze.add_argument(
        "--fingerprint-only",
        action="store_true",
        help="only fingerprint and tags (decodes just the first 120 s)",
    )
    analyze.add_argument(
        "--bpm-range",
        type=_bpm_range,
        default=None,
        metavar="LOW-HIGH",
        help="the tempo range a DJ counts in (default: 70-180); a 64 BPM ballad is 128 within it",
    )
    analyze.set_defaults(handler=_cmd_analyze)

    config = commands.add_parser(
        "config",
        help="print the effective configuration and where each value comes from",
        description="Print every setting, its effective value, and whether it comes from the "
        "default, the config file, or a flag. Problems in the file are all reported at once.",
    )
    config.add_argument("--config", metavar="FILE", help="config file (default: the platform's config folder)")
    config.set_defaults(handler=_cmd_config)

    run = commands.add_parser(
        "run",
        help="run the agent in the foreground (watch, analyze, sync)",
        description="Run the agent: watch the music folders, analyze new and changed files once, "
        "and keep the journal true to the disk. Logs go to standard error. Stops cleanly on "
        "SIGTERM or Ctrl-C.",
    )
    _add_agent_options(run)
    run.add_argument("--tray", action="store_true", help="show the tray icon too, in this process")
    run.set_defaults(handler=_cmd_run)

    tray = commands.add_parser(
        "tray",
        help="show the tray icon for the running agent",
        description="A tray icon with the agent's state and a menu: pause, contribute, sync now, "
        "export, delete my contributions. It talks to the agent only through its control socket.",
    )
    tray.set_defaults(handler=_cmd_tray)

    service = commands.add_parser(
        "service",
        help="install the agent as a login service (systemd user unit / launchd agent)",
        description="install: write the service file for this installation, enable and start it, "
        "and start the tray at login; uninstall: reverse all of it; status: the service's state.",
    )
    service.add_argument("action", choices=("install", "uninstall", "status"))
    service.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    service.add_argument("--no-tray", action="store_true", help="do not start the tray icon at login")
    service.set_defaults(handler=_cmd_service)

    scan = commands.add_parser(
        "scan",
        help="reconcile the music folders with the journal once, analyze what changed, and exit",
        description="One reconciliation pass over the music folders (new, changed, moved and "
        "deleted files), then analysis of everything new, with a progress bar. Refused while the "
        "agent runs (use `cratesense rescan` then).",
    )
    _add_agent_options(scan)
    scan.set_defaults(handler=_cmd_scan)

    status = commands.add_parser("status", help="what the running agent is doing")
    status.add_argument("--json", action="store_true", help="print the full status as JSON")
    status.set_defaults(handler=_cmd_status)
    pause = commands.add_parser("pause", help="pause analysis (watching goes on; survives restarts)")
    when = pause.add_mutually_exclusive_group()
    when.add_argument("--for", dest="duration", type=_duration, metavar="DURATION", help="e.g. 30m, 1h, 2d")
    when.add_argument("--until", dest="duration", type=_until, metavar="HH:MM",
                      help="until the next time the clock shows HH:MM (e.g. 07:00: until tomorrow morning)")
    pause.set_defaults(handler=lambda args: _control("POST", "pause", {"seconds": args.duration}))
    resume = commands.add_parser("resume", help="resume analysis")
    resume.set_defaults(handler=lambda args: _control("POST", "resume"))
    rescan = commands.add_parser("rescan", help="ask the running agent for a full reconciliation scan now")
    rescan.set_defaults(handler=lambda args: _control("POST", "rescan"))
    sync = commands.add_parser("sync", help="sync with the catalog now and wait for it")
    sync.set_defaults(handler=lambda args: _control("POST", "sync", timeout=150))
    contribute = commands.add_parser("contribute", help="turn contribution to the shared catalog on or off")
    contribute.add_argument("setting", choices=("on", "off"))
    contribute.set_defaults(handler=lambda args: _control("PUT", "settings", {"contribute": args.setting == "on"}))
    forget = commands.add_parser(
        "forget",
        help="ask the catalog to delete every observation you contributed",
        description="Ask the catalog to delete every observation this agent contributed. The request "
        "is kept until the catalog confirms it (even offline, even across restarts), and "
        "contribution is turned off so nothing is uploaded again unless you turn it back on.",
    )
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    forget.set_defaults(handler=_cmd_forget)
    export = commands.add_parser(
        "export", help="the library as rekordbox XML, Traktor NML or M3U8; or what the agent and the catalog hold about you",
        description="--format rekordbox|traktor|m3u writes the tracks (the filters select them, as in "
        "`tracks`) to FILE as one collection and playlist. --format json (the default) writes "
        "everything the agent and the catalog hold about you to two JSON files in the DIR --output names.")
    export.add_argument("--format", default="json", choices=("json", "rekordbox", "traktor", "m3u"))
    export.add_argument("--output", default=".", metavar="FILE|DIR",
                        help="the file to write (the folder for --format json; default: here)")
    export.add_argument("--name", default="CrateSense", help="the playlist's name in the DJ program")
    export.add_argument("--relative-to", metavar="DIR", help="m3u: paths relative to this folder")
    cli_dj.add_filters(export)
    export.add_argument("--sort", default="artist", metavar="FIELD", help=cli_dj.SORT_HELP)
    export.add_argument("--limit", type=cli_dj.positive, metavar="N")
    export.set_defaults(handler=_cmd_export)
    open_page = commands.add_parser(
        "open", help="open the local web page: the library, the agent, the privacy controls",
        description="Opens the agent's page (on 127.0.0.1 only, behind an access token) in your browser.")
    open_page.add_argument("--print-url", action="store_true", help="print the address (with its token) and exit")
    open_page.set_defaults(handler=_cmd_open)
    preview = commands.add_parser("preview", help="print exactly the next request that would leave this machine")
    preview.set_defaults(handler=_cmd_preview)
    failures = commands.add_parser("failures", help="files that could not be analyzed, and why")
    failures.add_argument("--config", metavar="FILE", help=argparse.SUPPRESS)
    failures.set_defaults(handler=_cmd_failures)

    cli_dj.add_commands(commands)

    catalog = commands.add_parser("catalog", help="run a shared catalog server")
    catalog_commands = catalog.add_subparsers(title="catalog commands", metavar="COMMAND")
    serve = catalog_commands.add_parser(
        "serve",
        help="serve the catalog API",
        description="Serve the catalog (the v1 wire contract) over HTTP. Listens on loopback by "
        "default; put a TLS-terminating proxy in front of it to share it.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8750, help="port (default: 8750)")
    serve.add_argument("--db", metavar="FILE|URL",
                       help="a SQLite file (default: catalog.sqlite in the data folder) or a postgresql:// URL")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="worker processes on the one port (PostgreSQL only; default: 1)")
    serve.add_argument("--read-db", metavar="URL",
                       help="a streaming standby of the PostgreSQL --db: look-ups, recommendations and exports "
                       "are read there while it keeps up (the primary answers them otherwise)")
    serve.add_argument("--read-max-lag", type=float, default=5.0, metavar="SECONDS",
                       help="how far the standby may be behind before reads go to the primary (default: 5)")
    serve.set_defaults(handler=_cmd_catalog_serve)
    catalog.set_defaults(handler=lambda args: help_of(catalog))
    return parser


def help_of(parser: argparse.ArgumentParser) -> int:
    """A command group named without its command: its help, and the exit code of a usage error."""
    parser.print_help()
    return EXIT_ERROR


def _cmd_catalog_serve(args: argparse.Namespace) -> int:
    from cratesense.catalog.service import serve
    from cratesense.daemon.paths import data_dir

    logging.getLogger("cratesense").setLevel(logging.DEBUG if args.debug else logging.INFO)
    options = {"read_target": args.read_db, "max_lag": args.read_max_lag} if args.read_db else {}
    return serve(args.db or str(data_dir() / "catalog.sqlite"), args.host, args.port, args.workers, store_options=options)


def _add_agent_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (default: the platform's config folder)")
    parser.add_argument(
        "--folder", action="append", metavar="DIR", help="a music folder (repeatable; overrides library.folders)"
    )
    parser.add_argument("--workers", type=int, metavar="N", help="analysis processes (overrides analysis.workers)")


def _agent_config(args: argparse.Namespace):
    from cratesense.daemon.config import load

    overrides: dict[str, object] = {}
    if args.folder:
        overrides["library.folders"] = [os.path.abspath(folder) for folder in args.folder]
    if args.workers is not None:
        overrides["analysis.workers"] = args.workers
    return load(args.config, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    from cratesense.daemon.agent import Agent, run_forever, run_with_tray
    from cratesense.daemon.paths import data_dir, runtime_dir

    if not args.debug:
        logging.getLogger("cratesense").setLevel(logging.INFO)
        # the agent's requests to its own embedded catalog are not news to the user
        logging.getLogger("cratesense.catalog.access").setLevel(logging.WARNING)
    agent = Agent(_agent_config(args), data_dir(), runtime_dir())
    (run_with_tray if args.tray else run_forever)(agent)
    return EXIT_OK


def _cmd_service(args: argparse.Namespace) -> int:
    from cratesense.daemon.service import carry_out, current_plan, is_installed

    if args.action == "status" and not is_installed():
        print("the CrateSense service is not installed (cratesense service install)")
        return EXIT_NOT_RUNNING
    from cratesense.daemon.config import load

    config = load()
    # the unit mounts the home folder read-only; writing tags into new files needs the music folders
    writable = tuple(Path(folder) for folder in config.music_folders) if config.tags.write_new else ()
    steps = current_plan(args.action, tray=not args.no_tray, writable=writable)
    if args.dry_run:
        for step in steps:
            print(step.describe())
            if step.action == "write":
                print("".join(f"       | {line}\n" for line in step.content.splitlines()), end="")
        return EXIT_OK
    carry_out(steps)
    if args.action != "status":
        print(f"cratesense service {args.action}: done")
    return EXIT_OK


def _cmd_tray(args: argparse.Namespace) -> int:
    from cratesense.tray.app import run_tray

    run_tray()
    return EXIT_OK


def _cmd_scan(args: argparse.Namespace) -> int:
    """The agent for one pass (the same composition as ``run``, without watching): reconcile,
    analyze what changed, sync, and exit, with a progress line on a terminal."""
    import asyncio

    from cratesense.daemon.agent import Agent
    from cratesense.daemon.paths import data_dir, runtime_dir

    agent = Agent(_agent_config(args), data_dir(), runtime_dir())
    progress = sys.stderr.isatty()
    told = {"paused": False}

    def show(status) -> None:
        if status.paused and not told["paused"]:
            told["paused"] = True
            print("cratesense: analysis is paused (cratesense resume, or the agent's menu); scanning only",
                  file=sys.stderr)
        if not progress:
            return
        if status.scanning:
            sys.stderr.write(f"\r\033[Kscanning: {status.scanning[0]} files seen")
        elif status.progress:
            sys.stderr.write(f"\r\033[Kanalyzing: {status.progress.done}/{status.progress.total} files")
        sys.stderr.flush()

    status = asyncio.run(agent.run_once(show))
    if progress:
        sys.stderr.write("\r\033[K")
    stats = status.session
    print(
        f"{status.files} files, {status.tracks} tracks; this scan: {stats.get('analyzed', 0)} analyzed, "
        f"{stats.get('linked', 0)} linked to known audio, {stats.get('moved', 0)} moved, "
        f"{stats.get('deleted', 0)} deleted, {stats.get('failed', 0)} failed"
    )
    for folder_path, why in status.missing_folders.items():
        print(f"  {folder_path}: {why}")
    if status.journal_error:
        print(f"  {status.journal_error}")
    return EXIT_FAILURES if stats.get("failed") or status.journal_error else EXIT_OK


def _control(method: str, name: str, body: dict | None = None, timeout: float = 10.0) -> int:
    from cratesense.daemon.control_client import request_raw
    from cratesense.daemon.status import decode

    _print_status(decode(request_raw(method, name, body, timeout=timeout)))
    return EXIT_OK


def _cmd_forget(args: argparse.Namespace) -> int:
    from cratesense.daemon.control_client import status as agent_status
    from cratesense.daemon.control_client import request_raw
    from cratesense.daemon.status import decode

    agent_status()  # says "not running" before asking anything
    if not args.yes:
        if not sys.stdin.isatty():
            print("cratesense: forget needs --yes when not run from a terminal", file=sys.stderr)
            return EXIT_ERROR
        answer = input("Delete every observation you contributed from the catalog, and stop contributing? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    status = decode(request_raw("POST", "forget", timeout=90))
    deletion = status.deletion or {}
    if deletion.get("confirmed_at"):
        print(f"the catalog deleted {deletion['deleted']} observation(s); contribution is now off")
    else:
        print("deletion requested; it is sent as soon as the catalog can be reached")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format != "json":
        return cli_dj.export_library(args)
    from cratesense.daemon.control_client import request, write_export

    for path in write_export(request("GET", "export", timeout=120), Path(args.output)):
        print(f"wrote {path}")
    return EXIT_OK


def _cmd_open(args: argparse.Namespace) -> int:
    from cratesense.daemon.control_client import request

    url = request("GET", "web")["url"]
    if args.print_url:
        print(url)
        return EXIT_OK
    import webbrowser

    if not webbrowser.open(url):
        print(f"no browser could be started here; open this address: {url}")
    return EXIT_OK


def _cmd_preview(args: argparse.Namespace) -> int:
    from cratesense.daemon.control_client import request

    preview = request("GET", "preview")
    if not preview["contribute"]:
        print("# contribution is off: no observation leaves this machine (the taste profile still does)")
    print(json.dumps(preview["request"], indent=2, ensure_ascii=False))
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from cratesense.daemon.control_client import request_raw
    from cratesense.daemon.status import decode, to_dict

    data = request_raw("GET", "status")
    if args.json:
        print(json.dumps(to_dict(decode(data)), indent=2, ensure_ascii=False))
    else:
        _print_status(decode(data))
    return EXIT_OK


def _print_status(status) -> None:
    from cratesense.daemon.status import describe

    rows = describe(status)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def _cmd_failures(args: argparse.Namespace) -> int:
    """Read-only: it opens the journal for reading only (never migrating it under a running
    agent of another version), and works with the agent stopped."""
    from cratesense.daemon.journal_read import JournalReader, display_path
    from cratesense.daemon.paths import journal_path

    path = journal_path()
    if not path.exists():
        print("no journal yet: the agent has not run")
        return EXIT_OK
    with JournalReader(path) as journal:
        failures = journal.failures()
        parked = journal.parked()
    for file_path, kind, message in failures:
        print(f"{display_path(file_path)}: {kind}: {message}")
    if not failures:
        print("no failing files")
    for observation_id, reason in parked:
        print(f"observation {observation_id} refused by the catalog: {reason}")
    return EXIT_OK


def _until(text: str) -> float:
    """Seconds from now until the next local HH:MM."""
    import datetime

    try:
        hour, minute = (int(part) for part in text.split(":"))
        target = datetime.time(hour, minute)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time such as 07:00, got {text!r}") from None
    from cratesense.daemon.control_client import seconds_until

    return seconds_until(target)


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value, unit = float(text[:-1]), units[text[-1].lower()]
    except (ValueError, KeyError, IndexError):
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 1h or 2d, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return value * unit


def _cmd_config(args: argparse.Namespace) -> int:
    from cratesense.daemon.config import describe, load

    config = load(args.config)
    print(f"# {config.path}{'' if config.path.exists() else ' (not present: defaults)'}")
    for setting, value, source in describe(config):
        shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        print(f"{setting} = {shown}  # {source}")
    return EXIT_OK


def _bpm_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH such as 70-180, got {text!r}") from None
    from cratesense.analysis.constants import BPM_LIMITS

    if not BPM_LIMITS[0] <= low < high <= BPM_LIMITS[1] or high < 2 * low:
        raise argparse.ArgumentTypeError(
            f"the range must lie within {BPM_LIMITS[0]:g}-{BPM_LIMITS[1]:g} BPM and span at least an octave")
    return low, high


def _audio_files(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Files to analyze (named files as given, folders searched for audio as the agent's scan
    does) and missing paths."""
    from cratesense.daemon.scan import walk

    files: list[str] = []
    missing: list[str] = []
    for given in paths:
        if os.path.isdir(given):
            files.extend(sorted(os.fsdecode(path) for path, _ in walk([given])))
        elif os.path.lexists(given):
            files.append(given)
        else:
            missing.append(given)
    return files, missing


def _cmd_analyze(args: argparse.Namespace) -> int:
    import msgspec

    from cratesense.daemon.pool import AnalysisPool, Task

    files, missing = _audio_files(args.paths)
    failures = [(path, "not found") for path in missing]
    progress = _Progress(len(files)) if sys.stderr.isatty() and len(files) > 1 else None
    rows = []
    with AnalysisPool(workers=min(max(1, args.jobs), max(1, len(files))), timeout=args.timeout, nice=0) as pool:
        tasks = (Task(path, descriptors=not args.fingerprint_only, bpm_range=args.bpm_range) for path in files)
        for outcome in pool.run(tasks):
            if outcome.analysis is not None:
                record = {"path": outcome.path, **msgspec.to_builtins(outcome.analysis)}
                if args.table:
                    rows.append(record)
                else:
                    if progress:
                        progress.clear()
                    print(json.dumps(record, ensure_ascii=False), flush=True)
            else:
                failures.append((outcome.path, f"{outcome.error_kind}: {outcome.error}"))
            if progress:
                progress.advance(failed=not outcome.ok)
    if progress:
        progress.clear()
    if args.table:
        _print_table(sorted(rows, key=lambda row: row["path"]))
    if failures:
        print(f"\n{len(failures)} of {len(files) + len(missing)} files failed:", file=sys.stderr)
        for path, reason in sorted(failures):
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_FAILURES
    if not files:
        print("cratesense: no audio files found", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


def _print_table(rows: list[dict]) -> None:
    from cratesense.analysis.codecs import codec_name
    from cratesense.analysis.model import shown_title

    columns = [
        ("file", lambda r: Path(r["path"]).name),
        ("artist", lambda r: r["tags"]["artist"]),
        ("title", lambda r: shown_title(r["tags"]["title"], r["path"])),
        ("time", lambda r: _minutes(r["audio"]["duration"])),
        ("bpm", lambda r: r["descriptors"]["bpm"]),
        ("key", lambda r: r["descriptors"]["key"]),
        ("camelot", lambda r: r["descriptors"]["camelot"]),
        ("LUFS", lambda r: r["descriptors"]["loudness_lufs"]),
        ("format", lambda r: codec_name(r["audio"]["codec"])),
    ]
    cells = [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [
        min(40, max([len(name)] + [len(line[i]) for line in cells])) for i, (name, _) in enumerate(columns)
    ]
    print("  ".join(name.ljust(width) for (name, _), width in zip(columns, widths)).rstrip())
    for line in cells:
        print("  ".join(cell[:width].ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(value) -> str:
    return "-" if value is None else str(value)


def _minutes(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class _Progress:
    """A one-line progress bar on standard error (only on a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._draw()

    def advance(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self._draw()

    def _draw(self) -> None:
        width = 30
        filled = width * self.done // max(1, self.total)
        failed = f", {self.failed} failed" if self.failed else ""
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files{failed}")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
