"""The ``cratesense`` command line: the edge where errors become one line and an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from cratesense import __version__
from cratesense.errors import CrateSenseError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some files failed
EXIT_ERROR = 2  # the command could not run


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
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("cratesense: interrupted", file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


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
    if not 20 <= low < high <= 300 or high < 2 * low:
        raise argparse.ArgumentTypeError("the range must lie within 20-300 BPM and span at least an octave")
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
    from cratesense.daemon.pool import AnalysisPool, Task

    files, missing = _audio_files(args.paths)
    failures = [(path, "not found") for path in missing]
    progress = _Progress(len(files)) if sys.stderr.isatty() and len(files) > 1 else None
    rows = []
    with AnalysisPool(workers=min(max(1, args.jobs), max(1, len(files))), timeout=args.timeout, nice=0) as pool:
        tasks = (Task(path, descriptors=not args.fingerprint_only, bpm_range=args.bpm_range) for path in files)
        for outcome in pool.run(tasks):
            if outcome.ok:
                record = {"path": outcome.path, **outcome.analysis.to_dict()}
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
    columns = [
        ("file", lambda r: Path(r["path"]).name),
        ("artist", lambda r: r["tags"]["artist"]),
        ("title", lambda r: r["tags"]["title"]),
        ("time", lambda r: _minutes(r["audio"]["duration"])),
        ("bpm", lambda r: r["descriptors"]["bpm"]),
        ("key", lambda r: r["descriptors"]["key"]),
        ("camelot", lambda r: r["descriptors"]["camelot"]),
        ("LUFS", lambda r: r["descriptors"]["loudness_lufs"]),
        ("format", lambda r: r["audio"]["codec"]),
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
