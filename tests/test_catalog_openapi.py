"""The served OpenAPI 3.1 document: generated from the contract, and true of the running
catalog — schemathesis (a test-only extra) sends a bounded number of generated requests, valid
and invalid, to a real catalog on each backend: no 5xx, every status, header and body as the
document says, and invalid bodies refused."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from cratesense.catalog import contract
from cratesense.catalog.openapi import document
from cratesense.catalog.server import start
from cratesense.catalog.store import Store

EXAMPLES = int(os.environ.get("CRATESENSE_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection")


@contextmanager
def served(target, **limits):
    """A real catalog over ``target`` on 127.0.0.1, its event loop on a thread of its own (the
    schemathesis process talks to it from outside): yields the base URL."""
    ready, state = threading.Event(), {}

    async def main() -> None:
        store = Store(target)
        runner, url = await start(store, **limits)
        state.update(url=url, loop=asyncio.get_running_loop(), stop=asyncio.Event())
        ready.set()
        try:
            await state["stop"].wait()
        finally:
            await runner.cleanup()
            store.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="catalog", daemon=True)
    thread.start()
    assert ready.wait(60), "the catalog did not start"
    try:
        yield state["url"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(60)


def test_the_document_is_openapi_3_1_generated_from_the_contract():
    doc = document()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    # the request types are the contract's own (bounds included), the batch items are observations
    assert schemas["Observation"]["additionalProperties"] is False
    assert schemas["AnalysisPart"]["properties"]["bpm"]["anyOf"][0] == {"type": "number", "minimum": 20.0, "maximum": 300.0}
    assert schemas["IngestRequest"]["properties"]["observations"]["items"] == {"$ref": "#/components/schemas/Observation"}
    assert schemas["Profile"]["properties"]["tempo_histogram"]["maxItems"] == contract.TEMPO_BINS
    assert "file path" in schemas["Observation"]["description"]  # the guard, in words
    operations = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert operations == {("post", "/v1/contributors"), ("post", "/v1/observations"), ("post", "/v1/lookup"),
                          ("put", "/v1/profile"), ("put", "/v1/contributors/me"),
                          ("delete", "/v1/contributors/me/observations"), ("get", "/v1/contributors/me/export"),
                          ("get", "/v1/changes"), ("get", "/v1/recommendations"), ("get", "/v1/openapi.json")}
    assert doc["paths"]["/v1/contributors"]["post"]["security"] == []
    assert doc["paths"]["/v1/lookup"]["post"]["security"] == [{"bearer": []}]


async def test_the_catalog_serves_its_document(catalog_db):
    import aiohttp

    from catalogkit import catalog_server

    async with catalog_server(catalog_db) as (_, url):
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/v1/openapi.json") as response:
                assert response.status == 200 and response.content_type == "application/json"
                assert await response.json() == json.loads(json.dumps(document()))


def test_schemathesis_finds_nothing(catalog_db, tmp_path):
    """`st run` against the served document: a bounded number of examples per operation (set
    CRATESENSE_SCHEMATHESIS_EXAMPLES for a longer run). Turning contribution off gets a
    contributor of its own, or every ingest after it would only be refused."""
    st = Path(sys.executable).parent / "st"
    assert st.exists(), "schemathesis is a test extra: scripts/setup.sh test installs it"
    with served(catalog_db, rate=1e6, burst=1e6) as url:
        for selection in (["--exclude-operation-id", "put_settings"], ["--include-operation-id", "put_settings"]):
            request = urllib.request.Request(url + "/v1/contributors", method="POST", data=b"")
            with urllib.request.urlopen(request, timeout=30) as response:
                token = json.loads(response.read())["token"]
            result = subprocess.run(
                [str(st), "run", f"{url}/v1/openapi.json", *selection, "--checks", CHECKS,
                 "--header", f"Authorization: Bearer {token}", "--max-examples", str(EXAMPLES), "--seed", "16",
                 "--workers", "1", "--no-color", "--generation-database", "none", "--request-timeout", "30",
                 "--phases", "examples,coverage,fuzzing"],
                capture_output=True, text=True, timeout=900, cwd=tmp_path,
            )
            assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
            tested = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
            assert tested and int(tested.group(1)) == int(tested.group(2)) > 0, result.stdout[-3000:]
            assert "Authentication failed" not in result.stdout, result.stdout[-3000:]
