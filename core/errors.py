"""The one exception root of CrateSense.

Every error a user can meet is a ``CrateSenseError`` subclass, raised by the component that
knows what went wrong and handled only at the edge (the CLI prints one line and sets the exit
code; the daemon records it as a status). Tree::

    CrateSenseError
    ├── AnalysisError            a file could not be analyzed (analysis/)
    │   ├── UnreadableFileError  missing, unreadable or zero-byte file
    │   ├── DecodeError          not decodable audio (corrupt, wrong format, no audio stream)
    │   ├── TruncatedAudioError  decodes, but ends well before its declared length
    │   ├── TooShortError        shorter than the minimum we can analyze
    │   ├── SilentAudioError     decodes to digital silence
    │   └── AnalysisTimeoutError exceeded its per-file time limit
    ├── ConfigError              bad configuration (daemon/config.py)
    ├── JournalError             the journal cannot be used; says what to do (daemon/journal.py)
    └── AlreadyRunningError      another agent holds the instance lock (daemon/instance.py)
"""


class CrateSenseError(Exception):
    """Root of every error CrateSense reports to a person."""


class AnalysisError(CrateSenseError):
    """A file could not be analyzed; ``kind`` is a stable short name for journals and status."""

    kind = "analysis"


class UnreadableFileError(AnalysisError):
    kind = "unreadable"


class DecodeError(AnalysisError):
    kind = "decode"


class TruncatedAudioError(AnalysisError):
    kind = "truncated"


class TooShortError(AnalysisError):
    kind = "too-short"


class SilentAudioError(AnalysisError):
    kind = "silent"


class AnalysisTimeoutError(AnalysisError):
    kind = "timeout"


class ConfigError(CrateSenseError):
    kind = "config"
