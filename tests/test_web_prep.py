"""The page's prep (#26): the band-coloured waveform with phrases and cues, and the preview the
agent streams with Range requests, behind the page's token, for library files only; checked at
the HTTP level and in the real headless browser (the preview plays: ``currentTime`` advances)."""

from __future__ import annotations

import json
import os
import shutil
import signal
from urllib.parse import urlparse

import pytest

from agentproc import agent_over
from audiogen import arrangement, encode, tag
from test_web import ARTIFACTS, ask, browser, page_url, wait

SR = 44100
FORM = (("intro", 8), ("drop", 8), ("breakdown", 8), ("drop", 8), ("outro", 8))


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    def music(folder):
        for name, (bpm, seed) in {"alpha": (126, 5), "bravo": (127, 7)}.items():
            samples, _ = arrangement(FORM, bpm=bpm, tonic=9, minor=True, seed=seed)
            tag(encode(samples, SR, folder / f"{name}.flac"), "Ann", name.title())
        return 2

    process = agent_over(tmp_path_factory.mktemp("webprep"), music, analysis={"workers": 2})
    yield process
    process.stop(signal.SIGKILL)


def _session(url: str) -> dict:
    token = urlparse(url).query.split("token=", 1)[1]
    cookie = ask(url, f"/?token={token}").getheader("Set-Cookie")
    return {"Cookie": cookie.split(";", 1)[0]}


def _key(url: str, jar: dict, title: str) -> str:
    tracks = json.loads(ask(url, "/api/tracks", headers=jar).data)["tracks"]
    return next(track["content_key"] for track in tracks if track["title"] == title)


def test_the_preview_streams_a_library_file_with_ranges_and_nothing_else(agent, tmp_path):
    url = page_url(agent)
    jar = _session(url)
    key = _key(url, jar, "Alpha")
    data = (agent.music / "alpha.flac").read_bytes()
    assert ask(url, f"/api/audio?content_key={key}").status == 401  # behind the token
    part = ask(url, f"/api/audio?content_key={key}", headers={**jar, "Range": "bytes=100-1099"})
    assert part.status == 206 and part.data == data[100:1100]
    assert part.getheader("Content-Range") == f"bytes 100-1099/{len(data)}"
    assert part.getheader("Content-Type") == "audio/flac" and part.getheader("Accept-Ranges") == "bytes"
    whole = ask(url, f"/api/audio?content_key={key}", headers=jar)
    assert whole.status == 200 and whole.data == data
    prep = json.loads(ask(url, f"/api/prep?content_key={key}", headers=jar).data)
    assert [cue["letter"] for cue in prep["cues"] if cue["hot"] is not None] == ["A", "B", "C", "D"]
    assert prep["waveform"]["data"] and prep["playable"]
    # nothing but a library track, named by its content key: no path ever reaches the disk
    outside = tmp_path / "secret.flac"
    shutil.copy(agent.music / "alpha.flac", outside)
    for query in (f"path={outside}", f"content_key={key}&path={outside}", "content_key=../../etc/passwd",
                  "content_key=0000", f"content_key={outside}", ""):
        refused = ask(url, f"/api/audio?{query}", headers=jar)
        assert refused.status == 404 and refused.data[:4] != b"fLaC", query
    # a library file replaced by a link to a file outside the library is not served either
    bravo = _key(url, jar, "Bravo")
    target = agent.music / "bravo.flac"
    original = tmp_path / "bravo.flac"
    shutil.move(target, original)
    os.symlink(outside, target)
    try:
        assert ask(url, f"/api/audio?content_key={bravo}", headers=jar).status == 404
    finally:
        os.unlink(target)
        shutil.move(original, target)


def test_range_requests_are_answered_as_http_says(agent):
    """What a player (or any HTTP client) may ask of the preview: a start, a suffix, a range past
    the end (cut at the end), one that starts beyond it (416), what the server may ignore (the
    whole file), and nothing but GET."""
    url = page_url(agent)
    jar = _session(url)
    key = _key(url, jar, "Alpha")
    data = (agent.music / "alpha.flac").read_bytes()
    size = len(data)
    path = f"/api/audio?content_key={key}"
    for header, (first, last) in {"bytes=0-": (0, size - 1), "bytes=-500": (size - 500, size - 1),
                                  "bytes=100-": (100, size - 1), f"bytes={size - 10}-{size + 1000}": (size - 10, size - 1),
                                  f"bytes=-{size + 5}": (0, size - 1), "bytes=7-7": (7, 7)}.items():
        part = ask(url, path, headers={**jar, "Range": header})
        assert part.status == 206, header
        assert part.getheader("Content-Range") == f"bytes {first}-{last}/{size}", header
        assert int(part.getheader("Content-Length")) == last - first + 1 and part.data == data[first : last + 1], header
        assert part.getheader("X-Content-Type-Options") == "nosniff" and part.getheader("Accept-Ranges") == "bytes"
    beyond = ask(url, path, headers={**jar, "Range": f"bytes={size}-"})
    assert beyond.status == 416 and beyond.getheader("Content-Range") == f"bytes */{size}"
    for ignored in ("bytes=0-1,5-9", "items=0-9", "bytes=9-1", "bytes=x-"):  # HTTP lets a server send it all
        whole = ask(url, path, headers={**jar, "Range": ignored})
        assert whole.status == 200 and whole.data == data and whole.getheader("Content-Range") is None, ignored
    origin = f"http://{urlparse(url).netloc}"
    assert ask(url, path, method="HEAD", headers=jar).status == 405  # GET only
    assert ask(url, path, method="POST", headers={**jar, "Origin": origin}, body=b"").status == 405


def test_the_preview_says_what_it_streams(formats_dir):
    """Each format with its own media type (from what FFmpeg read the file as, not its name)."""
    from cratesense.analysis.pipeline import analyze_file
    from cratesense.dj.playback import media_type, playable

    expected = {"mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/ogg; codecs=opus",
                "m4a": "audio/mp4", "wav": "audio/wav", "aiff": "audio/aiff"}
    for ext, path in formats_dir.items():
        audio = analyze_file(path, descriptors=False).audio
        assert media_type(audio.container, audio.codec) == expected[ext], ext
        assert playable(audio.codec) == (ext != "aiff"), ext


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="Debian's chromium and chromium-driver are not installed (scripts/setup.sh test installs them)")
def test_the_page_draws_the_prep_and_plays_from_a_cue(agent, tmp_path):
    from selenium.webdriver.common.by import By

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser(downloads)
    try:
        driver.get(page_url(agent))
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")  # noqa: E731
        wait(lambda: len(rows()) == 2, what="the library")
        next(row for row in rows() if "Alpha" in row.text).click()
        cues = lambda: driver.find_elements(By.CSS_SELECTOR, "#cue-list button")  # noqa: E731
        wait(lambda: len(cues()) >= 4, what="the cue list")
        assert [button.get_attribute("data-hot") for button in cues()[:4]] == ["A", "B", "C", "D"]
        painted = driver.execute_script(
            "const c = document.getElementById('waveform'); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
            "for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n / (c.width * c.height);")
        assert painted > 0.2, painted  # the overview, the phrase strip and the cues are drawn
        # each memory cue is a phrase's start and says that phrase's energy
        jar = {"Cookie": "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())}
        prep = json.loads(ask(page_url(agent), f"/api/prep?content_key={_key(page_url(agent), jar, 'Alpha')}",
                              headers=jar).data)
        memory = [button for button in cues() if not button.get_attribute("data-hot")]
        assert [(float(b.get_attribute("data-start")), int(b.get_attribute("data-energy"))) for b in memory] == [
            (phrase["start"], phrase["energy"]) for phrase in prep["phrases"]]
        assert all(f"energy {phrase['energy']}/10" in button.get_attribute("title")
                   for phrase, button in zip(prep["phrases"], memory))
        breakdown = next(button for button in cues() if button.get_attribute("data-hot") == "C")
        start = float(breakdown.get_attribute("data-start"))
        breakdown.click()
        player = lambda name: driver.execute_script(f"return document.getElementById('player').{name};")  # noqa: E731
        wait(lambda: player("currentTime") > start + 0.5, timeout=60, what="the preview to play from the cue")
        first = player("currentTime")
        wait(lambda: player("currentTime") > first + 0.3, timeout=30, what="the preview to keep playing")
        assert not player("paused") and player("error") is None
        assert abs(player("currentTime") - start) < 30  # it started at the cue, not at the top
        # a click on the overview plays from there: three quarters in
        overview = driver.find_element(By.ID, "waveform")
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(driver).move_to_element_with_offset(overview, overview.size["width"] // 4, 0).click().perform()
        duration = player("duration")
        wait(lambda: abs(player("currentTime") - 0.75 * duration) < 5, timeout=30, what="the preview to seek")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "web-prep.png"))
        assert not [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
