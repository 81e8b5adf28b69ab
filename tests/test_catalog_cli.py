"""The catalog server as a process."""

from __future__ import annotations


def test_catalog_serve_command(tmp_path):
    """`cratesense catalog serve` as a process: serves, logs access without bodies, stops on SIGTERM."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port), "--db", str(tmp_path / "c.sqlite")],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        for _ in range(100):
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/contributors", method="POST", data=b"")
                with urllib.request.urlopen(request, timeout=2) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                time.sleep(0.1)
        assert len(body["contributor_id"]) == 32 and body["token"]
    finally:
        server.send_signal(signal.SIGTERM)
        _, log = server.communicate(timeout=10)
    assert server.returncode == 0
    assert "POST /v1/contributors 201" in log and body["token"] not in log
    assert (tmp_path / "c.sqlite").exists()
