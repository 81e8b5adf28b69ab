"""The v1 API as an OpenAPI 3.1 document, generated from the msgspec contract (contract.py), so
the types a client reads are the types the catalog decodes and answers with. Served at
``GET /v1/openapi.json``; schemathesis checks the running catalog against it
(tests/test_catalog_openapi.py).

What a type cannot say is said in words: the guard's rules (no path-like text, a real
Chromaprint fingerprint whose length fits its duration) are in ``Observation``'s description,
and every operation lists the errors it can answer with.
"""

from __future__ import annotations

import msgspec

from cratesense import __version__
from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.catalog import contract

_REF = "#/components/schemas/{name}"

# (method, path, operation id, summary, request model or None, (status, response model), errors)
_OPERATIONS = (
    ("post", "/v1/contributors", "register", "Become a pseudonymous contributor: a random id and a bearer token "
     "(only its hash is kept).", None, (201, contract.Registered), (429,)),
    ("post", "/v1/observations", "ingest", "Send a batch of observations (idempotent by observation id). Each item "
     "is accepted, a duplicate, or rejected with a reason; a batch that breaks the contract is refused whole. "
     "An accepted item matched before the answer names its recording; `pending` counts those answered first "
     "(the catalog was busy) and matched moments later.",
     contract.IngestRequest, (200, contract.IngestResponse), (400, 403, 408, 413, 415, 422)),
    ("post", "/v1/lookup", "lookup", "Recordings (with their consensus) for up to "
     f"{contract.MAX_LOOKUP} fingerprints.", contract.LookupRequest, (200, contract.LookupResponse),
     (400, 408, 413, 415, 422)),
    ("put", "/v1/profile", "put_profile", "Store the taste profile: histograms and a centroid, never a track list.",
     contract.Profile, (200, contract.ProfileStored), (400, 408, 413, 415, 422)),
    ("put", "/v1/contributors/me", "put_settings", "Turn contribution on or off.", contract.ContributorSettings,
     (200, contract.SettingsStored), (400, 408, 413, 415, 422)),
    ("delete", "/v1/contributors/me/observations", "delete_observations", "Erase every observation of this "
     "contributor and re-derive every recording it touched; answers with the count.", None,
     (200, contract.Deleted), ()),
    ("get", "/v1/contributors/me/export", "export", "Everything the catalog holds about this contributor.", None,
     (200, contract.Export), ()),
    ("get", "/v1/changes", "changes", "The recordings this contributor holds whose consensus changed after the "
     "cursor (from the last answer; none: from the start), with this contributor's own observation ids in each.",
     None, (200, contract.Changes), (422,)),
    ("get", "/v1/recommendations", "recommendations", "Recordings held by the DJs whose libraries and taste "
     "profiles are nearest this contributor's, with the reason in words; never one held by fewer than 3 "
     "contributors, never naming any.",
     None, (200, contract.Recommendations), ()),
)
# query parameters, per operation id
_PARAMETERS = {
    "changes": [
        {"name": "since", "in": "query", "required": False, "description": "The cursor's change number (0: from the start).",
         "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}},
        {"name": "after", "in": "query", "required": False,
         "description": "The cursor's recording, when the last page ended inside a change.",
         "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}},
    ],
}
_ERRORS = {
    400: "Not JSON, not valid gzip, or nested too deeply.",
    401: "No bearer token, or an unknown one.",
    403: "Contribution is turned off for this contributor.",
    408: "The body did not arrive in time.",
    413: f"The body (inflated) is larger than {contract.MAX_BODY_BYTES} bytes, or the batch has more than "
         f"{contract.MAX_BATCH} observations.",
    415: "A Content-Encoding other than gzip.",
    422: "The body breaks the contract: `field` names where, `rule` says how.",
    429: "Too many requests: wait for Retry-After seconds.",
}
_GUARD = (
    "Beyond its types, every observation passes the guard: no text that looks like a file path, a file "
    "name, a home folder or a URI; no long base64 or hex runs; no control characters; nothing that "
    "decodes to audio; the fingerprint is a real Chromaprint fingerprint (algorithm 1, URL-safe base64 "
    "starting AQ) with an item count that fits its duration and at least 80 distinct items."
)


def _example_fingerprint() -> str:
    """A fingerprint the guard accepts, for the examples: 120 s of a random walk of 32-bit items
    (a few bits change from one item to the next, as in real Chromaprint output)."""
    import random

    import chromaprint

    rng = random.Random(16)
    item, items = rng.getrandbits(32), []
    for _ in range(948):
        for bit in rng.sample(range(32), 5):
            item ^= 1 << bit
        items.append(item)
    return chromaprint.encode_fingerprint(items, 1).decode()


def _examples() -> dict[str, dict]:
    """A valid body per operation (named by its request model)."""
    fingerprint = {"chromaprint": _example_fingerprint(), "duration": 180.0}
    share = [0.0] * (contract.TEMPO_BINS - 1) + [1.0]
    return {
        "IngestRequest": {"observations": [{
            "id": "0123456789abcdef0123456789abcdef", "fingerprint": fingerprint,
            "metadata": {"artist": "AC/DC", "title": "Live 1/2/99", "album": None, "isrc": "GBAYE0601498",
                         "catalog_number": None, "duration": 180.0},
            "analysis": {"analyzer_version": ANALYZER_VERSION, "bpm": 128.0, "key": "A minor", "camelot": "8A",
                         "loudness_lufs": -8.5, "embedding": None}}]},
        "LookupRequest": {"fingerprints": [fingerprint]},
        "Profile": {"track_count": 120, "tempo_histogram": share, "key_histogram": [1 / contract.KEY_BINS] * contract.KEY_BINS,
                    "loudness_histogram": [1 / contract.LOUDNESS_BINS] * contract.LOUDNESS_BINS, "embedding_centroid": None},
        "ContributorSettings": {"contribute": True},
    }


def document() -> dict:
    """The OpenAPI 3.1 document of the v1 API."""
    examples = _examples()
    models = [contract.Observation, contract.Error]
    for _, _, _, _, request, (_, response), _ in _OPERATIONS:
        models += [m for m in (request, response) if m is not None]
    _, components = msgspec.json.schema_components(models, ref_template=_REF)
    # the ingest body's items are decoded one by one (so an error names the item): describe them
    components["IngestRequest"]["properties"]["observations"]["items"] = {"$ref": _REF.format(name="Observation")}
    components["Observation"]["description"] = _GUARD
    paths: dict = {}
    for method, path, operation_id, summary, request, (status, response), errors in _OPERATIONS:
        authenticated = operation_id != "register"
        codes = sorted({*errors, 429, 404, 405, 500, *((401,) if authenticated else ())})
        operation: dict[str, object] = {
            "operationId": operation_id,
            "summary": summary,
            "responses": {
                str(status): _json_response("Done.", response.__name__),
                **{str(code): _json_response(_ERRORS.get(code, _ERROR_WORDS.get(code, "")), "Error",
                                              retry_after=code == 429) for code in codes},
            },
        }
        if operation_id in _PARAMETERS:
            operation["parameters"] = _PARAMETERS[operation_id]
        if request is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": _REF.format(name=request.__name__)},
                "examples": {"valid": {"value": examples[request.__name__]}}}}}
        operation["security"] = [{"bearer": []}] if authenticated else []
        paths.setdefault(path, {})[method] = operation
    paths["/v1/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document.", "security": [],
        "responses": {"200": {"description": "The OpenAPI 3.1 document of the v1 API.",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      **{str(code): _json_response(_ERROR_WORDS[code], "Error") for code in (404, 405, 500)}},
    }}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CrateSense catalog",
            "version": __version__,
            "summary": "The shared catalog of derived music observations (v1 wire contract).",
            "description": "Bodies are JSON, optionally gzip'd (Content-Encoding: gzip). Unknown fields are "
                           "rejected. Nothing in any body may be a file path, a file name or audio.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The token POST /v1/contributors issued."}},
        },
    }


_ERROR_WORDS = {404: "No such route.", 405: "Not a method this route takes.", 500: "Internal error (logged)."}


def _json_response(description: str, model: str, retry_after: bool = False) -> dict:
    response = {"description": description,
                "content": {"application/json": {"schema": {"$ref": _REF.format(name=model)}}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait.", "required": True,
                                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return response
