"""The one exception tree of CrateSense.

Every error a user can meet is a ``CrateSenseError`` subclass, raised by the component that
knows what went wrong and handled only at the edge: the CLI prints ``cratesense: <message>``
on one line and exits with the error's ``exit_code``; the daemon turns it into a status; the
control API answers with its ``http_status`` (400 for the user's mistake, 409 for a request the
agent cannot carry out now) and its ``kind``, and the client raises the same class again
(``from_kind``), so the CLI prints and exits alike whether it asked the agent or read the
journal itself. Anything else raised in a handler is a bug: a 500 and a logged traceback. Each
class has a stable ``kind`` (for journals, statuses and JSON) and an exit code::

    CrateSenseError                     exit 2 unless said otherwise
    ├── AnalysisError                   a file could not be analyzed (analysis/)     exit 1
    │   ├── UnreadableFileError         missing, unreadable or zero-byte file
    │   ├── DecodeError                 not decodable audio (corrupt, wrong format, no audio stream)
    │   ├── TruncatedAudioError         decodes, but ends well before its declared length
    │   ├── TooShortError               shorter than the minimum we can analyze
    │   ├── SilentAudioError            decodes to digital silence
    │   └── AnalysisTimeoutError        exceeded its per-file time limit
    ├── ModelError                      the sound model cannot be loaded (analysis/learned.py)
    ├── ConfigError                     bad configuration (daemon/config.py)                 HTTP 400
    ├── JournalError                    the journal cannot be used; says what to do (daemon/journal.py)
    │   ├── JournalDamagedError         not a sound database: moved aside and rebuilt
    │   └── JournalVersionError         written by another schema version than this program reads
    ├── DataFolderError                 the data folder cannot be written (daemon/instance.py)
    ├── AlreadyRunningError             another agent holds the instance lock                 exit 1
    ├── IdentityError                   the identity file cannot be read (daemon/identity.py)
    ├── AgentError                      talking to the running agent (daemon/control_client.py)
    │   ├── NotRunningError             no agent is running                                   exit 3
    │   └── ControlError                the agent did not answer, or refused the request
    ├── QueryError                      a request that cannot be answered (bad track, range...)   HTTP 400
    ├── ExportError                     an export or tag write that cannot be done
    ├── BackendError                    the catalog's database cannot be used (catalog/backends.py)
    ├── ServiceError                    installing the login service (daemon/service.py)
    └── TrayUnavailableError            no tray can be shown here (tray/app.py)
"""


class CrateSenseError(Exception):
    """Root of every error CrateSense reports to a person."""

    kind = "error"
    exit_code = 2
    http_status = 409  # the control API's answer: the request cannot be carried out now


class AnalysisError(CrateSenseError):
    """A file could not be analyzed; ``kind`` is a stable short name for journals and status."""

    kind = "analysis"
    exit_code = 1


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


class ModelError(CrateSenseError):
    """The shipped sound model is missing or damaged: the rest of the analysis goes on without it."""

    kind = "model"


class ConfigError(CrateSenseError):
    kind = "config"
    http_status = 400


class JournalError(CrateSenseError):
    kind = "journal"


class JournalDamagedError(JournalError):
    """The file is not a sound SQLite database: the agent moves it aside and rebuilds."""

    kind = "journal-damaged"


class JournalVersionError(JournalError):
    """A read-only command met a journal of another schema version: it reads nothing and
    changes nothing (migrating is the running agent's job)."""

    kind = "journal-version"


class DataFolderError(CrateSenseError):
    kind = "data-folder"


class AlreadyRunningError(CrateSenseError):
    kind = "already-running"
    exit_code = 1


class IdentityError(CrateSenseError):
    kind = "identity"


class AgentError(CrateSenseError):
    kind = "agent"


class NotRunningError(AgentError):
    kind = "not-running"
    exit_code = 3


class ControlError(AgentError):
    kind = "control"


class QueryError(CrateSenseError):
    kind = "query"
    http_status = 400


class ExportError(CrateSenseError):
    kind = "export"


class BackendError(CrateSenseError):
    """The catalog's database cannot be used (not reachable, missing driver, bad URL, --workers
    on SQLite); says what to do."""

    kind = "catalog-database"


class ServiceError(CrateSenseError):
    kind = "service"


class TrayUnavailableError(CrateSenseError):
    kind = "tray-unavailable"


def from_kind(kind: str | None, message: str) -> CrateSenseError:
    """The error a server answered with ``kind``, raised again on this side (a kind this
    version does not know: a ``ControlError``)."""
    pending: list[type[CrateSenseError]] = [CrateSenseError]
    while pending:
        cls = pending.pop()
        if cls.kind == kind and cls is not CrateSenseError:
            return cls(message)
        pending.extend(cls.__subclasses__())
    return ControlError(message)
