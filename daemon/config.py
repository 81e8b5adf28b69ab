"""The agent's configuration: one TOML file, loaded and validated once into a frozen object.

Every problem in the file is reported at once, each with its key (and a "did you mean" for
unknown keys); each component receives its own section through its constructor, never a global.
``Config.sources`` says where every value came from: the default, the file, or a flag.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from cratesense.analysis.constants import BPM_LIMITS, DEFAULT_BPM_RANGE, DEFAULT_TAG_FIELDS, TAG_FIELDS
from cratesense.daemon import paths
from cratesense.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LibraryConfig:
    folders: tuple[str, ...] = ()  # empty: the platform's music folder
    scan_interval_minutes: float = 60.0
    watch: str = "auto"  # "auto": inotify where it can serve, else polling; "polling": always poll
    poll_interval_seconds: float = 60.0
    quiet_seconds: float = 2.0  # a changed file is looked at this long after its last change


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    # 0: one per core. At nice 10 and the idle I/O class, 2 workers on 2 cores did not slow a
    # foreground task more than 1 did (bench/workers.py, issue #19), and a first pass needs them
    workers: int = 0
    timeout_seconds: float = 300.0
    bpm_range: tuple[float, float] = DEFAULT_BPM_RANGE
    nice: int = 10
    idle_worker_seconds: float = 60.0  # an analysis process with no work leaves after this long


@dataclass(frozen=True, slots=True)
class SyncConfig:
    catalog_url: str = ""  # empty: the embedded catalog
    interval_minutes: float = 15.0
    quiet_seconds: float = 60.0
    contribute: bool = True
    # fingerprint only (no tempo, key, loudness, embedding) the tracks the catalog already knows
    # from at least this many contributors; their consensus stands in for our descriptors
    skip_known_descriptors: bool = True
    known_min_contributors: int = 3


@dataclass(frozen=True, slots=True)
class DjConfig:
    key_notation: str = "camelot"  # how keys are shown and written: "camelot", "open-key" or "musical"
    pitch_range_percent: float = 6.0  # how far "next" may pitch a track to match tempo


@dataclass(frozen=True, slots=True)
class TagsConfig:
    write_new: bool = False  # write BPM, key and ReplayGain into each newly analyzed file (opt-in)
    fields: tuple[str, ...] = DEFAULT_TAG_FIELDS
    include_uncertain: bool = False  # also write a key the analysis is unsure of


@dataclass(frozen=True, slots=True)
class WebConfig:
    enabled: bool = True  # the local web page (loopback only, behind an access token)
    port: int = 8764  # clear of Syncthing (8384), Jellyfin (8096), Navidrome (4533) and our catalog (8750)


_SECTIONS = {"library": LibraryConfig, "analysis": AnalysisConfig, "sync": SyncConfig, "dj": DjConfig,
             "tags": TagsConfig, "web": WebConfig}
_CHOICES = {"library.watch": ("auto", "polling"), "dj.key_notation": ("camelot", "open-key", "musical")}
_SUBSETS = {"tags.fields": TAG_FIELDS}


@dataclass(frozen=True, slots=True)
class Config:
    library: LibraryConfig
    analysis: AnalysisConfig
    sync: SyncConfig
    dj: DjConfig
    tags: TagsConfig
    web: WebConfig
    path: Path  # the file it was read from (it may not exist)
    sources: dict  # "section.key" -> "default" | "file" | "flag"

    @property
    def music_folders(self) -> tuple[str, ...]:
        import platformdirs

        return self.library.folders or (platformdirs.user_music_dir(),)

    @property
    def workers(self) -> int:
        return self.analysis.workers or max(1, os.cpu_count() or 1)


def default_path() -> Path:
    return paths.config_path()


def data_dir() -> Path:
    return paths.data_dir()


def load(path: str | os.PathLike | None = None, overrides: dict[str, object] | None = None) -> Config:
    """Read ``path`` (default: the platform's config file; a missing file means all defaults),
    apply ``overrides`` ({"section.key": value}, from command-line flags), validate everything,
    and raise one ``ConfigError`` listing every problem."""
    path = Path(path) if path is not None else default_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    problems: list[str] = []
    sources: dict[str, str] = {}
    values: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    for section, body in document.items():
        if section not in _SECTIONS:
            problems.append(f"[{section}]: unknown section{_did_you_mean(section, _SECTIONS)}")
            continue
        if not isinstance(body, dict):
            problems.append(f"{section}: must be a table ([{section}])")
            continue
        for key, value in body.items():
            _accept(section, key, value, "file", values, sources, problems)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in _SECTIONS:
            problems.append(f"{dotted}: unknown setting")
            continue
        _accept(section, key, value, "flag", values, sources, problems)
    if problems:
        raise ConfigError(f"{path} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    sections = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    for name, cls in _SECTIONS.items():
        for field in fields(cls):
            sources.setdefault(f"{name}.{field.name}", "default")
    return Config(**sections, path=path, sources=sources)


def _accept(section, key, value, source, values, sources, problems) -> None:
    cls = _SECTIONS[section]
    known = {field.name: field for field in fields(cls)}
    if key not in known:
        problems.append(f"{section}.{key}: unknown key{_did_you_mean(key, known)}")
        return
    default = getattr(cls(), key)
    try:
        values[section][key] = _coerce(value, default)
        choices = _CHOICES.get(f"{section}.{key}")
        if choices and value not in choices:
            raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        allowed = _SUBSETS.get(f"{section}.{key}")
        if allowed and not set(value) <= set(allowed):
            raise ValueError(f"expected some of {', '.join(map(repr, allowed))}, got {value!r}")
    except (TypeError, ValueError) as exc:
        problems.append(f"{section}.{key}: {exc}")
        return
    sources[f"{section}.{key}"] = source


def _coerce(value, default):
    """``value`` as the type of ``default``, or a ValueError that says what was expected."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a whole number >= 0, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"expected a positive number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if isinstance(default, tuple) and len(default) == 2 and isinstance(default[0], float):
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            or not BPM_LIMITS[0] <= value[0] < value[1] <= BPM_LIMITS[1]
        ):
            raise ValueError(f"expected [low, high] within {BPM_LIMITS[0]:g}-{BPM_LIMITS[1]:g} BPM, got {value!r}")
        return (float(value[0]), float(value[1]))
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(os.path.expanduser(v) for v in value)
    raise TypeError(f"unsupported setting type {type(default).__name__}")


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(config: Config) -> list[tuple[str, object, str]]:
    """(setting, effective value, source) for ``cratesense config``."""
    rows = []
    for name in _SECTIONS:
        section = getattr(config, name)
        for field in fields(section):
            rows.append((f"{name}.{field.name}", getattr(section, field.name), config.sources[f"{name}.{field.name}"]))
    return rows
