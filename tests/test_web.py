"""The local web page: its security checked at the HTTP level, its use in a real headless browser
(Debian's Chromium, driven by selenium) against a real agent over real files."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from agentproc import AgentProcess, agent_over
from audiogen import encode, synth_track, tag

ARTIFACTS = Path(os.environ.get("CRATESENSE_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
SR = 44100
TRACKS = {"alpha": (124, 9, True), "bravo": (125, 9, True), "charlie": (126, 4, True), "delta": (124, 0, False),
          "echo": (128, 6, True), "foxtrot": (140, 9, True)}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    def music(folder):
        for index, (name, (bpm, tonic, minor)) in enumerate(TRACKS.items()):
            # bravo's own drum pattern: two loops of the same chords and drums at 124 and 125 BPM are
            # one recording to the fingerprint (0.88), and `next` never proposes a track's duplicate
            pattern = "boombap" if name == "bravo" else "four"
            samples = synth_track(bpm=bpm, tonic=tonic, minor=minor, seconds=20, seed=index, pattern=pattern)
            tag(encode(samples, SR, folder / f"{name}.flac"), f"Artist {name[0].upper()}", name.title())
        return len(TRACKS)

    process = agent_over(tmp_path_factory.mktemp("web"), music, analysis={"workers": 2})
    yield process
    process.stop(signal.SIGKILL)


def page_url(agent: AgentProcess) -> str:
    result = agent.cli("open", "--print-url")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ask(url: str, path: str, *, method: str = "GET", headers: dict | None = None, body: bytes | None = None,
        host: str | None = None) -> http.client.HTTPResponse:
    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", host or parsed.netloc)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    response.data = response.read()
    connection.close()
    return response


def test_the_page_is_no_local_hole(agent):
    url = page_url(agent)
    parsed = urlparse(url)
    origin = f"http://{parsed.netloc}"
    token = parsed.query.split("token=", 1)[1]
    # loopback only
    assert parsed.hostname == "127.0.0.1"
    with socket.socket() as probe:
        probe.connect(("127.0.0.1", parsed.port))
        assert probe.getsockname()[0] == "127.0.0.1"
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in addresses:  # the machine's other addresses get nothing
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex((address, parsed.port)) != 0, address
    # the token: none, wrong, then from the URL once, then as a strict cookie
    assert ask(url, "/api/tracks").status == 401 and ask(url, "/").status == 401
    assert ask(url, "/?token=wrong").status == 403
    first = ask(url, f"/?token={token}")
    assert first.status == 302 and first.getheader("Location") == "/"
    cookie = first.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    page = ask(url, "/", headers=jar)
    assert page.status == 200 and b"<title>CrateSense</title>" in page.data
    assert "default-src 'self'" in page.getheader("Content-Security-Policy")
    assert json.loads(ask(url, "/api/tracks", headers=jar).data)["total"] == len(TRACKS)
    # DNS rebinding: another name for us is refused, whatever the cookie
    assert ask(url, "/api/tracks", headers=jar, host=f"attacker.example:{parsed.port}").status == 403
    assert ask(url, "/api/tracks", headers=jar, host=f"127.0.0.1:{parsed.port + 1}").status == 403
    # a change needs a POST from this very page
    body = json.dumps({"seconds": 60}).encode()
    assert ask(url, "/api/pause", headers=jar).status == 405  # never a GET
    assert ask(url, "/api/pause", method="POST", headers=jar, body=body).status == 403  # no Origin
    assert ask(url, "/api/pause", method="POST", headers={**jar, "Origin": "http://attacker.example"}, body=body).status == 403
    assert not agent.status()["paused"]
    done = ask(url, "/api/pause", method="POST", headers={**jar, "Origin": origin, "Content-Type": "application/json"},
               body=body)
    assert done.status == 200 and agent.status()["paused"]
    assert ask(url, "/api/resume", method="POST", headers={**jar, "Origin": origin}, body=b"{}").status == 200
    # no file but the page's own assets
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/etc/passwd", "/app.js/../../x",
                 "/web-assets/app.js", "/api/../../../etc/passwd", f"/{agent.journal_path}"):
        answer = ask(url, path, headers=jar)
        assert answer.status == 404 and b"root:" not in answer.data, (path, answer.status)
    assert ask(url, "/app.js", headers=jar).status == 200


def browser(downloads: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1000", f"--user-data-dir={downloads.parent / 'profile'}"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def wait(condition, timeout: float = 30, what: str = "the page"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except Exception as exc:  # the page is still building that part
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh test installs them)")
def test_a_dj_uses_the_page_in_a_real_browser(agent, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser(downloads)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(page_url(agent))
        assert "token" not in driver.current_url  # it left the address bar
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")  # noqa: E731
        wait(lambda: len(rows()) == len(TRACKS), what="the library")
        titles = lambda: sorted(row.find_elements(By.TAG_NAME, "td")[1].text for row in rows())  # noqa: E731
        # filter: 120-128 BPM in 8A
        driver.find_element(By.ID, "bpm-low").send_keys("120")
        driver.find_element(By.ID, "bpm-high").send_keys("128")
        Select(driver.find_element(By.ID, "key")).select_by_value("8A")
        wait(lambda: titles() == ["Alpha", "Bravo"], what="the filtered rows")
        Select(driver.find_element(By.ID, "key")).select_by_value("")
        Select(driver.find_element(By.ID, "compatible")).select_by_value("8A")
        wait(lambda: titles() == ["Alpha", "Bravo", "Charlie", "Delta"], what="the keys that mix with 8A")
        driver.save_screenshot(str(ARTIFACTS / "web-library.png"))
        # a track: its wheel, what can follow it (with reasons) and what sounds like it
        next(row for row in rows() if "Alpha" in row.text).click()
        wait(lambda: "Bravo" in driver.find_element(By.ID, "next-list").text, what="the next list")
        assert "same key" in driver.find_element(By.ID, "next-list").text
        assert "Echo" not in driver.find_element(By.ID, "next-list").text  # 11A clashes with 8A
        wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#similar-list li")) >= 3, what="the similar list")
        assert driver.find_element(By.CSS_SELECTOR, "#wheel path[data-code='8A']").get_attribute("fill") == "#e0533d"
        driver.save_screenshot(str(ARTIFACTS / "web-track.png"))
        # a playlist from here, the best next added, saved as M3U8 and as rekordbox XML
        driver.find_element(By.ID, "start-playlist").click()
        driver.find_element(By.ID, "suggest").click()
        wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#playlist-tracks li")) == 2, what="a second track")
        name = driver.find_element(By.ID, "playlist-name")
        name.clear()
        name.send_keys("Warm up")
        driver.find_element(By.ID, "save-m3u").click()
        saved = wait(lambda: [p for p in downloads.glob("Warm up.m3u8")], what="the M3U8 download")[0]
        lines = saved.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#EXTM3U" and lines[1].endswith("Artist A - Alpha") and len(lines) == 5
        assert all(os.path.isfile(line) for line in lines[2::2])
        driver.find_element(By.ID, "save-rekordbox").click()
        xml = wait(lambda: [p for p in downloads.glob("Warm up.xml")], what="the rekordbox download")[0]
        from pyrekordbox.rbxml import RekordboxXml

        assert RekordboxXml(str(xml)).num_tracks == 2
        # the sound model's words on the track view; one of them filters the library, as the CLI does
        button = wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#track-words .word.genre"), what="its genres")[0]
        genre = button.text
        assert driver.find_elements(By.CSS_SELECTOR, "#track-words .word.mood")  # every track has a mood too
        button.click()
        wait(lambda: Select(driver.find_element(By.ID, "genre")).first_selected_option.get_attribute("value") == genre,
             what="the genre filter")
        listed = agent.cli("tracks", "--genre", genre, "--bpm", "120-128", "--compatible-with", "8A", "--json")
        assert listed.returncode == 0, listed.stderr
        expected = sorted(track["title"] for track in json.loads(listed.stdout)["tracks"])
        assert "Alpha" in expected
        wait(lambda: titles() == expected, what="the rows of that genre")
        Select(driver.find_element(By.ID, "genre")).select_by_value("")
        # overview pictures, drawn in the page
        driver.find_element(By.CSS_SELECTOR, ".tab[data-view='overview']").click()
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#tempo-chart rect"), what="the tempo chart")
        assert driver.find_elements(By.CSS_SELECTOR, "#key-wheel path") and driver.find_elements(
            By.CSS_SELECTOR, "#loudness-chart rect")
        assert driver.find_elements(By.CSS_SELECTOR, f"#genre-chart rect[data-word='{genre}']")
        assert driver.find_elements(By.CSS_SELECTOR, "#mood-chart rect")
        driver.save_screenshot(str(ARTIFACTS / "web-overview.png"))
        # the agent's status, and the privacy controls: contribute off shows in the agent's status
        driver.find_element(By.CSS_SELECTOR, ".tab[data-view='agent']").click()
        wait(lambda: "tracks known" in driver.find_element(By.ID, "status-rows").text, what="the status rows")
        driver.find_element(By.CSS_SELECTOR, ".tab[data-view='privacy']").click()
        wait(lambda: "observations" in driver.find_element(By.ID, "preview").text, what="the preview")
        assert "No audio" in driver.find_element(By.CSS_SELECTOR, ".statement").text
        toggle = driver.find_element(By.ID, "contribute")
        assert toggle.is_selected()
        toggle.click()
        wait(lambda: agent.status()["contribute"] is False, what="contribution to turn off")
        wait(lambda: "contribution is off" in driver.find_element(By.ID, "preview").text, what="the preview to say so")
        toggle.click()
        wait(lambda: agent.status()["contribute"] is True, what="contribution to turn on again")
        driver.save_screenshot(str(ARTIFACTS / "web-privacy.png"))
        assert not [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
