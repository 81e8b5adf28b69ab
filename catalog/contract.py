"""The v1 wire contract (shared/design.md, "The wire contract") and its guard.

Every request body is a strict msgspec model: unknown fields are rejected, every
string is bounded, numbers are in range and finite. On top of the types, ``guard`` rejects what a
type cannot see: strings that look like file paths, long base64/hex runs, control characters,
anything that decodes to audio, and a fingerprint that is not a real Chromaprint fingerprint of
plausible length for its duration. The agent runs the same code before it queues an observation,
so the catalog's door and the agent's outbox can never disagree. Responses are described by
models too; the consensus a look-up answers is the typed track's (``analysis/model.py``), which
ignores fields it does not know, so an agent reads a newer catalog's answers.

A rejection is a ``ContractError`` naming the field (``observations[3].metadata.title``) and the
rule it broke.
"""

from __future__ import annotations

import array
import base64
import binascii
import ctypes
import math
import re
import struct
import sys
import unicodedata
from typing import Annotated, Literal, TypeVar

import msgspec

from cratesense.analysis.constants import (  # owned there (light: the agent's read paths import them without msgspec)
    BPM_LIMITS,
    EMBEDDING_LENGTH,
    GENRE_WORDS,
    KEY_BINS,
    LOUDNESS_BINS,
    MAX_SHORT_TEXT_LENGTH,
    MAX_TEXT_LENGTH,
    MOOD_WORDS,
    TEMPO_BINS,
)
from cratesense.analysis.model import Consensus, ConsensusAnalysis, ConsensusMetadata

MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_BATCH = 500
MAX_LOOKUP = 100
PROFILE_LENGTH = TEMPO_BINS + KEY_BINS + LOUDNESS_BINS + EMBEDDING_LENGTH
# every answer names the contract the catalog serves (a digest of its OpenAPI document): an agent
# that sees it change offers the observations an earlier contract refused once more
CONTRACT_HEADER = "CrateSense-Contract"
MAX_FINGERPRINT_CHARS = 12_000  # a 120 s fingerprint is about 2,600 characters

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SHORT_TEXT_LENGTH)]
ObservationId = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
Isrc = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")]
Camelot = Annotated[str, msgspec.Meta(pattern=r"^(1[0-2]|[1-9])[AB]$")]
KeyName = Annotated[str, msgspec.Meta(pattern=r"^[A-G][#b]? (major|minor)$")]
Duration = Annotated[float, msgspec.Meta(ge=1.0, le=6 * 3600.0)]
Bpm = Annotated[float, msgspec.Meta(ge=BPM_LIMITS[0], le=BPM_LIMITS[1])]
Lufs = Annotated[float, msgspec.Meta(ge=-70.0, le=10.0)]
AnalyzerVersion = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9.]{1,64}$")]
UnitFloat = Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)]
# The sound model's words: only the vocabulary (analysis/constants.py), never free text.
GenreWord = Literal[GENRE_WORDS]  # type: ignore[valid-type]
MoodWord = Literal[MOOD_WORDS]  # type: ignore[valid-type]
MAX_WORDS = 3  # genres or moods per observation (the sound model gives at most 3 of each)
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """What the catalog is sent: a field it does not know is refused, by name."""


class _Reply(msgspec.Struct, omit_defaults=False):
    """What the catalog answers: a field the reader does not know is ignored, so an agent keeps
    syncing with a catalog upgraded after it (a new reply field is not a broken catalog)."""


class FingerprintPart(_Strict):
    chromaprint: Annotated[str, msgspec.Meta(min_length=8, max_length=MAX_FINGERPRINT_CHARS)]
    duration: Duration


class Metadata(_Strict):
    artist: Text | None = None
    title: Text | None = None
    album: Text | None = None
    isrc: Isrc | None = None
    catalog_number: ShortText | None = None
    duration: Duration | None = None


class AnalysisPart(_Strict):
    analyzer_version: AnalyzerVersion
    bpm: Bpm | None = None
    key: KeyName | None = None
    camelot: Camelot | None = None
    loudness_lufs: Lufs | None = None
    embedding: Annotated[list[UnitFloat], msgspec.Meta(min_length=EMBEDDING_LENGTH, max_length=EMBEDDING_LENGTH)] | None = None
    genres: Annotated[list[GenreWord], msgspec.Meta(max_length=MAX_WORDS)] | None = None
    moods: Annotated[list[MoodWord], msgspec.Meta(max_length=MAX_WORDS)] | None = None


class Observation(_Strict):
    id: ObservationId
    fingerprint: FingerprintPart
    metadata: Metadata
    analysis: AnalysisPart


class IngestRequest(_Strict):
    observations: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]


class LookupRequest(_Strict):
    fingerprints: Annotated[list[FingerprintPart], msgspec.Meta(min_length=1, max_length=MAX_LOOKUP)]


class Profile(_Strict):
    """The taste profile: histograms and a centroid, never a track list."""

    track_count: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
    tempo_histogram: Annotated[list[Share], msgspec.Meta(min_length=TEMPO_BINS, max_length=TEMPO_BINS)]
    key_histogram: Annotated[list[Share], msgspec.Meta(min_length=KEY_BINS, max_length=KEY_BINS)]
    loudness_histogram: Annotated[list[Share], msgspec.Meta(min_length=LOUDNESS_BINS, max_length=LOUDNESS_BINS)]
    embedding_centroid: Annotated[list[UnitFloat], msgspec.Meta(min_length=EMBEDDING_LENGTH, max_length=EMBEDDING_LENGTH)] | None = None
    # what the centroid's embeddings are (analysis/constants.py STAGE_VERSIONS["embedding"]):
    # centroids of different versions are never compared; absent from agents before version 3
    embedding_version: Annotated[int, msgspec.Meta(ge=1, le=999)] | None = None


class ContributorSettings(_Strict):
    contribute: bool


# --- responses (what the catalog answers; catalog/openapi.py describes both sides) -------------

class Registered(_Reply):
    contributor_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
    token: str


class ItemResult(_Reply):
    id: str
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    # accepted and matched before the answer: the recording it joined (absent: pending, matched
    # moments later; or not accepted now)
    recording: int | None = None


class IngestResponse(_Reply):
    results: list[ItemResult]
    accepted: Annotated[int, msgspec.Meta(ge=0)]
    # of those accepted, how many were answered before being matched (the catalog was busy):
    # each is durable and matched moments later; 0 when the whole batch was matched first
    pending: Annotated[int, msgspec.Meta(ge=0)] = 0


# A look-up's answer per fingerprint is the typed track's consensus (analysis/model.py): the
# agent decodes it into the same model it keeps in its journal, so its fields are named once.
RecordingMetadata = ConsensusMetadata
RecordingAnalysis = ConsensusAnalysis
Match = Consensus


class LookupResponse(_Reply):
    results: list[Match | None]  # one per fingerprint asked, in order; null: not known


class ChangedRecording(_Reply):
    """A recording the requester holds whose consensus changed, and the requester's own
    observations in it (never anyone else's)."""

    recording: int
    contributors: Annotated[int, msgspec.Meta(ge=0)]
    metadata: RecordingMetadata
    analysis: RecordingAnalysis
    observations: list[ObservationId]


class ChangesCursor(_Reply):
    """Where the next request starts: after change ``change`` (and, when a page ended inside
    that change, after recording ``recording`` of it)."""

    change: Annotated[int, msgspec.Meta(ge=0)]
    recording: int | None


class Changes(_Reply):
    """What changed in the recordings the requester holds since its cursor (GET /v1/changes)."""

    changes: list[ChangedRecording]
    cursor: ChangesCursor
    more: bool  # another page follows: ask again at once from ``cursor``


class SettingsStored(_Reply):
    """The contribute setting as the catalog now holds it."""

    contribute: bool


class ProfileStored(_Reply):
    stored: bool


class Deleted(_Reply):
    deleted: Annotated[int, msgspec.Meta(ge=0)]


class ExportedContributor(_Reply):
    id: str
    contribute: bool
    created_at: float
    deleted_at: float | None
    deleted_count: int | None


class ExportedFingerprint(_Reply):
    chromaprint: str
    duration: float


class ExportedAnalysis(_Reply):
    bpm: float | None
    key: str | None
    camelot: str | None
    loudness_lufs: float | None
    embedding: list[float] | None
    analyzer_version: str
    genres: list[str] | None = None
    moods: list[str] | None = None


class ExportedObservation(_Reply):
    id: str
    recording: int | None  # null: accepted, not matched yet
    fingerprint: ExportedFingerprint
    metadata: RecordingMetadata
    analysis: ExportedAnalysis
    received_at: float


class ExportedProfile(_Reply):
    track_count: int
    tempo_histogram: list[float]
    key_histogram: list[float]
    loudness_histogram: list[float]
    embedding_centroid: list[float]
    updated_at: float


class Export(_Reply):
    """Everything the catalog holds about the contributor asking."""

    contributor: ExportedContributor
    observations: list[ExportedObservation]
    profile: ExportedProfile | None


class Recommendation(_Reply):
    """A recording DJs like the requester hold (catalog/recommend.py): never one fewer than 3
    contributors hold, never naming any of them."""

    weight: float
    recording: int
    contributors: Annotated[int, msgspec.Meta(ge=3)]
    metadata: RecordingMetadata
    analysis: RecordingAnalysis
    reason: Annotated[str, msgspec.Meta(max_length=200)]  # e.g. "held by 4 DJs whose libraries overlap yours by 31 %"
    # its fingerprint's sketch (matching.sketch: 16 index terms), so an agent that does not
    # contribute (the catalog does not know what it holds) can leave out what it already has
    sketch: Annotated[list[Annotated[int, msgspec.Meta(ge=0, lt=1 << 28)]], msgspec.Meta(max_length=16)] = []


class Recommendations(_Reply):
    recommendations: list[Recommendation]


class Error(_Reply):
    """Every 4xx and 5xx: what went wrong; for a contract violation, the field and the rule."""

    error: str
    field: str | None = None
    rule: str | None = None


class ContractError(Exception):
    """A body that breaks the contract: ``field`` and ``rule`` say where and how."""

    def __init__(self, field: str, rule: str, status: int = 422) -> None:
        super().__init__(f"{field}: {rule}" if field else rule)
        self.field = field
        self.rule = rule
        self.status = status

    def at(self, prefix: str) -> ContractError:
        field = f"{prefix}.{self.field}" if self.field else prefix
        return ContractError(field, self.rule, self.status)

    def to_json(self) -> dict:
        return {"error": str(self), "field": self.field, "rule": self.rule}


T = TypeVar("T")
_FIELD_IN_MESSAGE = re.compile(r"^(?P<rule>.*?)(?: - at `\$\.?(?P<field>[^`]*)`)?$", re.S)


def decode(body: bytes, model: type[T]) -> T:
    """``body`` as ``model``, or a ContractError naming the field."""
    if len(body) > MAX_BODY_BYTES:
        raise ContractError("", f"the body is larger than {MAX_BODY_BYTES} bytes", status=413)
    try:
        value = msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as exc:
        match = _FIELD_IN_MESSAGE.match(str(exc))
        assert match is not None, "the pattern matches any message"
        rule, field = match.group("rule"), match.group("field") or ""
        unknown = re.match(r"Object contains unknown field `([^`]*)`", rule)
        if unknown:  # name the unknown field itself
            field = f"{field}.{unknown.group(1)}" if field else unknown.group(1)
            rule = "unknown field"
        raise ContractError(field, rule) from None
    except msgspec.DecodeError as exc:
        raise ContractError("", f"not valid JSON ({exc})", status=400) from None
    except RecursionError:
        raise ContractError("", "the JSON is nested too deeply", status=400) from None
    guard(value)
    return value


def decode_observations(request: IngestRequest) -> list[Observation]:
    """Each raw item of an ingest batch, decoded and guarded; the error names the item."""
    if len(request.observations) > MAX_BATCH:
        raise ContractError("observations", f"at most {MAX_BATCH} observations per request", status=413)
    observations = []
    for index, raw in enumerate(request.observations):
        try:
            observations.append(decode(bytes(raw), Observation))
        except ContractError as exc:
            raise exc.at(f"observations[{index}]") from None
    return observations


# --- the guard ------------------------------------------------------------------------------

_AUDIO_SUFFIXES = (
    "mp3|flac|ogg|oga|opus|m4a|mp4|aac|alac|wav|wave|aif|aiff|aifc|wma|wv|ape|mka|dsf|dff|mpc|"
    "m3u|m3u8|pls|xspf|cue|asx|wpl"
)
_PATH_RULES = (
    (re.compile(r"(?:^|[\s\"'(\[=<,;])/(?:[^/\s]+/)+[^/\s]*"), "looks like an absolute file path"),
    (re.compile(r"(?:^|[^A-Za-z0-9])[A-Za-z]:[\\/]"), "looks like a Windows file path"),
    (re.compile(r"\\\\[^\\\s]+\\"), "looks like a network share path (\\\\host\\share)"),
    (re.compile(r"(?:^|[\s\"'(=])~[\\/]"), "looks like a home-folder path (~/)"),
    (re.compile(r"(?i)\bfile:/"), "looks like a file: URI"),
    (re.compile(r"(?i)[\\/](?:home|Users|root|Documents and Settings)[\\/]"), "names a home folder"),
    (re.compile(r"(?i)%(?:USERPROFILE|HOMEPATH|APPDATA)%|\$HOME\b"), "names a home folder"),
    (re.compile(rf"(?i)[\\/][^\\/]*\.(?:{_AUDIO_SUFFIXES})\b"), "looks like a path to an audio or playlist file"),
    (re.compile(rf"(?i)\.(?:{_AUDIO_SUFFIXES})\s*$"), "looks like an audio or playlist file name"),
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
_HEX_RUN = re.compile(r"(?i)\b(?:0x)?[0-9a-f]{24,}\b")
# at least 3 bytes each: a 2-byte MP3 frame sync would turn words like "//sleep" into audio
_AUDIO_MAGIC = (b"RIFF", b"ID3", b"fLaC", b"OggS", b"FORM", b"MAC ", b"wvpk", b"caff", b"#!AMR")
_BASE64_RUN_MAX = 40  # longer base64-alphabet runs with digits and letters are blobs, not words
_ENTROPY_LIMIT = 4.0  # bits per character; words stay well below, random base64 above (detect-secrets)


def _entropy(text: str) -> float:
    counts = {char: text.count(char) for char in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def check_text(field: str, value: str) -> None:
    """The rules every free-text string obeys (artist, title, album, catalog number)."""
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Co", "Cn") or char in "\u2028\u2029":
            raise ContractError(field, f"contains a control or unassigned character (U+{ord(char):04X})")
    for pattern, rule in _PATH_RULES:
        if pattern.search(value):
            raise ContractError(field, rule)
    for run in _BASE64_RUN.findall(value):
        has_digit = any(c.isdigit() for c in run)
        has_upper, has_lower = any(c.isupper() for c in run), any(c.islower() for c in run)
        if _decodes_to_audio(run):
            raise ContractError(field, "contains encoded audio")
        blob_like = has_digit and (has_upper or has_lower) or "+" in run or "/" in run
        if len(run) >= 64 or (len(run) >= _BASE64_RUN_MAX and blob_like) or (
            len(run) >= 20 and blob_like and has_upper and has_lower and _entropy(run) > _ENTROPY_LIMIT
        ):
            raise ContractError(field, "contains a long base64 run (binary data)")
    if _HEX_RUN.search(value):
        raise ContractError(field, "contains a long hex run (binary data)")


def _decodes_to_audio(run: str) -> bool:
    """Whether a base64-alphabet run decodes to an audio file's first bytes (RIFF is "UklGR",
    ID3 "SUQz", fLaC "ZkxhQ", OggS "T2dnUw" in base64)."""
    try:
        data = base64.b64decode(run + "=" * (-len(run) % 4), altchars=b"-_" if "-" in run or "_" in run else None)
    except (binascii.Error, ValueError):
        return False
    return data.startswith(_AUDIO_MAGIC) or data[4:8] == b"ftyp"


def check_fingerprint(field: str, chromaprint: str, duration: float) -> bytes:
    """A real Chromaprint fingerprint (algorithm 1) whose item count fits its duration: its
    items packed (``fingerprint_packed``)."""
    packed = fingerprint_packed(field, chromaprint)
    count = len(packed) // 4
    expected = 8.08 * (min(duration, 120.0) - 2.7)
    if not 0.8 * expected <= count <= 1.2 * expected + 2:
        raise ContractError(
            field, f"{count} fingerprint items do not fit a duration of {duration:.1f} s (expected about {expected:.0f})"
        )
    items = memoryview(packed).cast("I")
    # a real fingerprint has its 80 distinct items early: the head alone usually settles it
    if len(set(items[:160].tolist())) < 80 and len(set(items.tolist())) < 80:
        raise ContractError(field, "too few distinct fingerprint items (at least 80: about 13 s of audio)")
    return packed


_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def fingerprint_packed(field: str, chromaprint: str) -> bytes:
    """The raw (decoded) fingerprint items as little-endian unsigned 32-bit integers (how the
    catalog stores them: ``matching.pack``), or a ContractError. Decoded by libchromaprint
    straight into bytes: no Python integer per item (the pyacoustid binding builds a list of
    them, which was most of the guard's cost on the catalog's event loop)."""
    import chromaprint as libchromaprint  # needs libchromaprint; loaded only where fingerprints are checked

    data = chromaprint.encode("ascii", "replace")  # anything else becomes "?", which is refused next
    if not data.startswith(b"AQ") or data.translate(None, _BASE64URL):
        raise ContractError(field, "not a Chromaprint fingerprint (expected a URL-safe base64 string starting AQ)")
    packed, algorithm = _decode(libchromaprint, data)
    if packed is None:
        raise ContractError(field, "not a Chromaprint fingerprint (does not decode)")
    if algorithm != 1:
        raise ContractError(field, f"Chromaprint algorithm {algorithm}; only algorithm 1 is accepted")
    if not packed or len(packed) > 4000:
        raise ContractError(field, f"{len(packed) // 4} fingerprint items; 1 to 1000 expected")
    if sys.byteorder != "little":
        swapped = array.array("I", packed)
        swapped.byteswap()
        packed = swapped.tobytes()
    return packed


def _decode(binding, data: bytes) -> tuple[bytes | None, int]:
    """(the items in native byte order, the algorithm), or (None, 0) when ``data`` does not decode."""
    lib = getattr(binding, "_libchromaprint", None)  # pyacoustid's ctypes handle, argument types declared
    if lib is None:  # a binding without it (another version): its public decode, a Python int per item
        try:
            items, algorithm = binding.decode_fingerprint(data)
        except Exception:
            return None, 0
        return array.array("I", [item & 0xFFFFFFFF for item in items]).tobytes(), algorithm
    result = ctypes.POINTER(ctypes.c_uint32)()
    size, algorithm_out = ctypes.c_int(), ctypes.c_int()
    try:
        decoded = lib.chromaprint_decode_fingerprint(data, len(data), ctypes.byref(result), ctypes.byref(size),
                                                     ctypes.byref(algorithm_out), 1)
        packed = (ctypes.string_at(result, 4 * size.value) if size.value > 0 else b"") if decoded == 1 else None
    finally:
        lib.chromaprint_dealloc(result)
    return packed, algorithm_out.value


def fingerprint_items(field: str, chromaprint: str) -> list[int]:
    """The raw (decoded) fingerprint items, or a ContractError."""
    packed = fingerprint_packed(field, chromaprint)
    return list(struct.unpack(f"<{len(packed) // 4}I", packed))


def guard(value) -> None:
    """The checks a type cannot express, on any decoded contract model."""
    if isinstance(value, Observation):
        check_fingerprint("fingerprint.chromaprint", value.fingerprint.chromaprint, value.fingerprint.duration)
        for name in ("artist", "title", "album", "catalog_number"):
            text = getattr(value.metadata, name)
            if text is not None:
                check_text(f"metadata.{name}", text)
    elif isinstance(value, LookupRequest):
        for index, part in enumerate(value.fingerprints):
            fingerprint_items(f"fingerprints[{index}].chromaprint", part.chromaprint)


def sanitize_observation(payload: dict) -> tuple[dict | None, list[str]]:
    """The agent's side of the guard: the observation with every field that breaks the contract
    dropped (metadata and analysis fields become null), and what was dropped and why. None if
    what remains cannot be an observation (its fingerprint or id is broken)."""
    dropped: list[str] = []
    payload = {section: dict(value) if isinstance(value, dict) else value for section, value in payload.items()}
    for _ in range(16):  # each pass drops at most one field
        try:
            decode(msgspec.json.encode(payload), Observation)
            return payload, dropped
        except ContractError as exc:
            section, _, name = exc.field.partition(".")
            name = name.split("[")[0]  # an embedding element drops the embedding
            dropped.append(f"{exc.field or 'observation'}: {exc.rule}")
            if section not in ("metadata", "analysis") or not name or name == "analyzer_version":
                return None, dropped  # the id, the fingerprint or the structure: nothing to send
            if exc.rule == "unknown field":
                payload[section].pop(name, None)
            else:
                payload[section][name] = None
    return None, dropped
