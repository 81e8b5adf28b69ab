// CrateSense's local page: plain JavaScript, no framework, nothing loaded from elsewhere.
// Everything it shows comes from the agent's own API under /api (the same answers the CLI gives).
"use strict";

const PAGE = 50; // rows per page: the table never holds the whole library
const CODES = [];
for (let n = 1; n <= 12; n++) CODES.push(`${n}A`, `${n}B`);

const state = { offset: 0, total: 0, tracks: [], current: null, playlist: [], status: null, asked: 0, tag: null };

const $ = (id) => document.getElementById(id);
const el = (tag, attributes = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
};
const svg = (tag, attributes = {}) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
};

async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const response = await fetch(`/api/${path}${query.size ? "?" + query : ""}`, { credentials: "same-origin" });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

async function post(path, body = {}) {
  const response = await fetch(`/api/${path}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function minutes(seconds) {
  if (seconds == null) return "-";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function folderOf(path) {
  const parts = path.split("/");
  return parts.slice(0, -1).join("/") || "/";
}

// a value the catalog's consensus filled is shown in italics with a mark (and how many DJs stand
// behind it); our own key or tempo where the consensus says otherwise is flagged with what it says
// our own key where the analysis is unsure of it is marked "?" (check it by ear)
function cell(track, name, value, field = name) {
  const filled = track.from_catalog.includes(field);
  const disputed = track.consensus_disagrees && field in track.consensus_disagrees;
  const unsure = uncertainNote(track, field);
  const djs = track.consensus_djs > 1 ? `${track.consensus_djs} DJs` : "the catalog";
  const attributes = filled ? { class: "catalog", title: `from the catalog's consensus (${djs})` }
    : disputed ? { class: "disputed", title: [consensusNote(track), unsure].filter(Boolean).join("; ") }
    : unsure ? { class: "uncertain", title: unsure } : {};
  return el("td", attributes,
    value == null || value === "" ? "-" : `${value}${unsure ? "?" : ""}${filled ? "*" : disputed ? " !" : ""}`);
}

// "uncertain key (strength 0.42): check it by ear" for a track's key our analysis is unsure of
function uncertainNote(track, field) {
  return field === "key" && track.key_uncertain
    ? `uncertain key (strength ${track.key_strength.toFixed(2)}): check it by ear` : "";
}

// a key as the page shows it beside a track's name: "8A?" where the analysis is unsure of it
function shownKey(track) {
  return track.key ? `${track.key}${track.key_uncertain ? "?" : ""}` : "";
}

// "key 8A here; 7 DJs say 9A": where the catalog's consensus disagrees with the file's own analysis
function consensusNote(track) {
  const disagrees = track.consensus_disagrees || {};
  const say = track.consensus_djs > 1 ? `${track.consensus_djs} DJs say` : "the catalog says";
  const notes = [];
  if (disagrees.key != null) notes.push(`key ${track.key} here; ${say} ${disagrees.key}`);
  if (disagrees.bpm != null) notes.push(`${track.bpm.toFixed(1)} BPM here; ${say} ${disagrees.bpm.toFixed(1)}`);
  return notes.join("; ");
}

// --- the library ---------------------------------------------------------------------------

function filters() {
  const low = $("bpm-low").value, high = $("bpm-high").value;
  let bpm = "";
  if (low && high) bpm = `${low}-${high}`;
  else if (low || high) bpm = low || high;
  return { bpm, key: $("key").value, compatible_with: $("compatible").value, genre: $("genre").value,
           mood: $("mood").value, tag: state.tag || "", search: $("search").value.trim(), sort: $("sort").value };
}

async function loadTracks() {
  const asked = ++state.asked;  // an older answer arriving late must not replace a newer one
  try {
    const answer = await api("tracks", { ...filters(), limit: PAGE, offset: state.offset });
    if (asked !== state.asked) return;
    state.total = answer.total;
    state.tracks = answer.tracks;
    const body = $("tracks").tBodies[0];
    body.replaceChildren(...answer.tracks.map((track) => {
      const row = el("tr", { "data-key": track.content_key, tabindex: "0", onclick: () => openTrack(track) },
        cell(track, "artist", track.artist), cell(track, "title", track.shown_title),
        cell(track, "bpm", track.bpm == null ? null : track.bpm.toFixed(1)), cell(track, "key", track.key),
        cell(track, "lufs", track.loudness_lufs == null ? null : track.loudness_lufs.toFixed(1), "loudness"),
        cell(track, "genre", track.genres.slice(0, 2).join(", "), "genres"),
        cell(track, "mood", track.moods.slice(0, 2).join(", "), "moods"),
        el("td", {}, minutes(track.duration)), el("td", { class: "path", title: track.path }, folderOf(track.path)));
      return row;
    }));
    const last = Math.min(state.offset + PAGE, state.total);
    $("page-info").textContent = state.total
      ? `${state.offset + 1}–${last} of ${state.total.toLocaleString()} tracks` : "no track matches";
    $("previous").disabled = state.offset === 0;
    $("next-page").disabled = last >= state.total;
  } catch (error) {
    $("page-info").textContent = error.message;
  }
}

function wheel(target, counts, highlight) {
  // the Camelot wheel: 12 numbers round the circle, minor (A) inside, major (B) outside
  target.replaceChildren();
  const max = Math.max(1, ...Object.values(counts || {}));
  for (let n = 1; n <= 12; n++) {
    for (const [letter, inner, outer] of [["A", 45, 75], ["B", 75, 105]]) {
      const code = `${n}${letter}`;
      const start = (n * 30 - 105) * Math.PI / 180, end = start + 30 * Math.PI / 180;  // 12 at the top
      const point = (r, a) => `${(r * Math.cos(a)).toFixed(2)} ${(r * Math.sin(a)).toFixed(2)}`;
      const path = `M ${point(inner, start)} L ${point(outer, start)} A ${outer} ${outer} 0 0 1 ${point(outer, end)} ` +
                   `L ${point(inner, end)} A ${inner} ${inner} 0 0 0 ${point(inner, start)} Z`;
      let fill = "#e8e8ee";
      if (counts) fill = `rgba(40, 110, 220, ${(0.08 + 0.92 * (counts[code] || 0) / max).toFixed(3)})`;
      if (highlight) {
        if (code === highlight.key) fill = "#e0533d";
        else if (highlight.compatible.includes(code)) fill = "#f3b3a6";
      }
      const segment = svg("path", { d: path, fill, stroke: "#fff", "stroke-width": "1.5", "data-code": code });
      const title = svg("title");
      title.textContent = counts ? `${code}: ${counts[code] || 0} tracks` : code;
      segment.append(title);
      target.append(segment);
      const middle = (start + end) / 2, r = (inner + outer) / 2;
      const label = svg("text", { x: (r * Math.cos(middle)).toFixed(1), y: (r * Math.sin(middle) + 3).toFixed(1),
                                  "text-anchor": "middle", "font-size": "9", fill: "#222" });
      label.textContent = code;
      target.append(label);
    }
  }
}

function compatibleCodes(code) {
  if (!code) return [];
  const n = parseInt(code, 10), letter = code.slice(-1);
  const step = (k) => ((n - 1 + k + 12) % 12) + 1;
  const other = letter === "A" ? "B" : "A";
  return [`${step(1)}${letter}`, `${step(-1)}${letter}`, `${n}${other}`, letter === "A" ? `${step(1)}B` : `${step(-1)}A`];
}

function suggestionItem(item) {
  const track = item.track;
  // another file of the same recording (another encode, a trimmed copy): marked, never "alike"
  return el("li", { "data-key": track.content_key, class: item.duplicate ? "duplicate" : "" },
    item.duplicate ? el("span", { class: "badge", title: "the same recording in another file (cratesense duplicates)" },
      "same recording") : "",
    el("button", { type: "button", class: "link", onclick: () => openTrack(track) },
      `${track.artist ? track.artist + " – " : ""}${track.shown_title}`),
    el("span", { class: "facts", title: uncertainNote(track, "key") },
      ` ${track.bpm ? track.bpm.toFixed(1) + " BPM" : ""} ${shownKey(track)} · ${item.score.toFixed(2)}`),
    consensusNote(track) ? el("div", { class: "disputed" }, `! ${consensusNote(track)}`) : "",
    el("div", { class: "reasons" }, item.reasons.join("; ")),
    el("button", { type: "button", class: "small", onclick: () => addToPlaylist(track) }, "+ playlist"));
}

async function openTrack(track) {
  state.current = track;
  $("track").classList.remove("hidden");
  $("track-title").textContent = `${track.artist ? track.artist + " – " : ""}${track.shown_title}`;
  $("track-facts").textContent = [track.bpm ? `${track.bpm.toFixed(1)} BPM` : "tempo unknown",
    shownKey(track) || "key unknown", track.loudness_lufs == null ? "" : `${track.loudness_lufs.toFixed(1)} LUFS`,
    minutes(track.duration), track.format, consensusNote(track) && `! ${consensusNote(track)}`,
    uncertainNote(track, "key") && `? ${uncertainNote(track, "key")}`, track.path].filter(Boolean).join(" · ");
  $("track-words").replaceChildren(...[["genre", track.genres], ["mood", track.moods], ["tag", track.tags]]
    .flatMap(([kind, words]) => words.map((word) => el("button", { type: "button", class: `word ${kind}`,
      title: `tracks with this ${kind}`, onclick: () => filterBy(kind, word) }, word))));
  wheel($("wheel"), null, { key: track.camelot, compatible: compatibleCodes(track.camelot) });
  loadPrep(track);
  $("next-list").replaceChildren(el("li", {}, "…"));
  $("similar-list").replaceChildren(el("li", {}, "…"));
  const [next, similar] = await Promise.allSettled([
    api("next", { content_key: track.content_key, limit: 10 }),
    api("similar", { content_key: track.content_key, limit: 10 }),
  ]);
  $("next-list").replaceChildren(...(next.status === "fulfilled" ? next.value.next.map(suggestionItem)
    : [el("li", {}, next.reason.message)]));
  $("similar-list").replaceChildren(...(similar.status === "fulfilled" ? similar.value.similar.map(suggestionItem)
    : [el("li", {}, similar.reason.message)]));
}

// --- the waveform overview, phrases, cues and the preview ------------------------------------

const BANDS = [["#2f6fd6", 0], ["#f0a020", 1], ["#f4f4f8", 2]]; // low (blue), mid (amber), high (white), drawn in this order

function waveformLevels(waveform) {
  const bytes = Uint8Array.from(atob(waveform.data), (c) => c.charCodeAt(0));
  const columns = [];
  for (let i = 0; i + 2 < bytes.length; i += 3) columns.push([bytes[i], bytes[i + 1], bytes[i + 2]]);
  return columns;
}

function drawPrep() {
  const prep = state.prep, canvas = $("waveform");
  if (!prep) return;
  // drawn at the screen's own resolution, in CSS pixels
  const ratio = window.devicePixelRatio || 1, width = canvas.clientWidth || 400, height = canvas.clientHeight || 110;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  const strip = 16, top = 12, middle = top + (height - strip - top) / 2, half = (height - strip - top) / 2;
  const duration = prep.duration || 1, x = (seconds) => (seconds / duration) * width;
  context.clearRect(0, 0, width, height);
  if (prep.waveform) {
    const columns = waveformLevels(prep.waveform), step = prep.waveform.column_seconds;
    for (const [colour, band] of BANDS) {
      context.fillStyle = colour;
      columns.forEach((levels, index) => {
        const h = half * levels[band] / 255;
        context.fillRect(x(index * step), middle - h, Math.max(1, x(step)), 2 * h);
      });
    }
  }
  for (const phrase of prep.phrases) {  // the phrases as a coloured strip along the bottom
    context.fillStyle = phrase.colour;
    context.fillRect(x(phrase.start), height - strip, Math.max(1, x(phrase.end) - x(phrase.start) - 1), strip);
    context.fillStyle = "#fff";
    context.font = "10px system-ui, sans-serif";
    const room = x(phrase.end) - x(phrase.start);  // the label, and the phrase's energy where it fits
    if (room > 30) context.fillText(room > 48 ? `${phrase.label} ${phrase.energy}` : phrase.label, x(phrase.start) + 3, height - 4);
  }
  for (const cue of prep.cues) {  // memory cues as thin lines, hot cues as lines with their letter
    context.fillStyle = cue.colour;
    context.fillRect(Math.round(x(cue.start)), cue.hot == null ? top + half * 1.6 : 0, cue.hot == null ? 1 : 2,
      cue.hot == null ? half * 0.4 : height - strip);
    if (cue.hot != null) {
      context.font = "bold 10px system-ui, sans-serif";
      context.fillText(cue.letter, Math.round(x(cue.start)) + 3, 10);
    }
  }
  const player = $("player");
  if (player.currentTime > 0) {  // the playhead
    context.fillStyle = "#ff3b30";
    context.fillRect(Math.round(x(player.currentTime)), 0, 2, height);
  }
}

function playFrom(seconds) {
  const player = $("player");
  const start = () => { player.currentTime = seconds; player.play().catch(() => {}); };
  if (player.readyState >= 1) start();
  else {
    player.addEventListener("loadedmetadata", start, { once: true });
    player.load();
  }
}

async function loadPrep(track) {
  state.prep = null;
  const player = $("player");
  player.pause();
  $("cue-list").replaceChildren();
  $("prep-note").textContent = "";
  $("waveform").getContext("2d").clearRect(0, 0, $("waveform").width, $("waveform").height);
  player.src = `/api/audio?content_key=${encodeURIComponent(track.content_key)}`;
  let prep;
  try {
    prep = await api("prep", { content_key: track.content_key });
  } catch (error) {
    $("prep-note").textContent = error.message;
    return;
  }
  if (state.current !== track) return;  // another track was opened meanwhile
  state.prep = prep;
  // a memory cue stands at a phrase's start: it says the phrase's energy, its title the rest
  const phraseAt = new Map(prep.phrases.map((phrase) => [phrase.start, phrase]));
  $("cue-list").replaceChildren(...prep.cues.filter((cue) => cue.hot != null).concat(prep.cues.filter((cue) => cue.hot == null))
    .map((cue) => {
      const phrase = phraseAt.get(cue.start);
      const about = phrase ? ` · ${phrase.bars} bars · energy ${phrase.energy}/10 · sure ${phrase.confidence.toFixed(2)}` : "";
      const button = el("button", { type: "button", class: "cue", "data-start": String(cue.start), "data-hot": cue.hot == null ? "" : cue.letter,
                                    "data-energy": cue.hot == null && phrase ? String(phrase.energy) : "",
                                    title: `bar ${cue.bar}${about}`, onclick: () => playFrom(cue.start) },
        `${cue.hot == null ? "" : cue.letter + " "}${cue.name} ${minutes(cue.start)}${cue.hot == null && phrase ? " · " + phrase.energy : ""}`);
      button.style.borderLeftColor = cue.colour;
      return el("li", {}, button);
    }));
  const notes = [];
  if (prep.energy != null) notes.push(`energy ${prep.energy}/10`);
  if (!prep.phrases.length) notes.push(prep.bars_known ? "too short for phrases" : "no bar grid: no phrases or cues");
  if (!prep.media_type || !player.canPlayType(prep.media_type)) {
    notes.push(`this browser cannot play ${prep.format || "this format"}`);
  }
  $("prep-note").textContent = notes.join(" · ");
  drawPrep();
}

function filterBy(kind, word) {
  // a word of the track view: the library filtered by it (genre and mood in their menus, any other
  // word as a tag filter shown beside them until it is removed)
  if (kind === "tag") {
    state.tag = word;
    $("tag-filter").replaceChildren(el("button", { type: "button", class: "word tag", title: "remove this filter",
      onclick: () => { state.tag = null; $("tag-filter").replaceChildren(); state.offset = 0; loadTracks(); } }, `${word} ×`));
  } else {
    const select = $(kind);
    if (![...select.options].some((option) => option.value === word)) select.append(el("option", { value: word }, word));
    select.value = word;
  }
  state.offset = 0;
  loadTracks();
}

async function loadWords() {
  // the genre and mood filters offer the words the library's tracks have, most common first
  const overview = await api("overview");
  for (const kind of ["genre", "mood"]) {
    const select = $(kind), chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "any"),
      ...Object.entries(overview[`${kind}s`] || {}).map(([word, count]) => el("option", { value: word }, `${word} (${count})`)));
    select.value = chosen;
  }
}

function wordBars(target, counts) {
  // one bar per word, most common first
  target.replaceChildren();
  const entries = Object.entries(counts || {}).slice(0, 16);
  if (!entries.length) return;
  const max = Math.max(...entries.map((e) => e[1])), width = 700 / entries.length;
  entries.forEach(([word, count], index) => {
    const h = 150 * count / max, x = 10 + index * width;
    const bar = svg("rect", { x: x.toFixed(1), y: (170 - h).toFixed(1), width: Math.max(1, width - 4).toFixed(1),
                              height: h.toFixed(1), fill: "#2a6edc", "data-word": word });
    const title = svg("title");
    title.textContent = `${word}: ${count}`;
    bar.append(title);
    const text = svg("text", { x: x.toFixed(1), y: "190", "font-size": "11" });
    text.textContent = word;
    target.append(bar, text);
  });
}

// --- the playlist being built --------------------------------------------------------------

function addToPlaylist(track) {
  if (!state.playlist.some((t) => t.content_key === track.content_key)) state.playlist.push(track);
  renderPlaylist();
}

function renderPlaylist() {
  $("playlist-tracks").replaceChildren(...state.playlist.map((track, index) => el("li", { "data-key": track.content_key },
    `${track.artist ? track.artist + " – " : ""}${track.shown_title}`,
    el("span", { class: "facts" }, ` ${track.bpm ? track.bpm.toFixed(1) : "-"} BPM ${track.key || ""}`),
    el("button", { type: "button", class: "small", onclick: () => { state.playlist.splice(index, 1); renderPlaylist(); } }, "remove"))));
}

async function suggestNext() {
  const last = state.playlist[state.playlist.length - 1];
  if (!last) return;
  const answer = await api("next", { content_key: last.content_key, limit: 25 });
  const choice = answer.next.find((item) => !state.playlist.some((t) => t.content_key === item.track.content_key));
  if (choice) addToPlaylist(choice.track);
}

async function savePlaylist(format) {
  if (!state.playlist.length) return;
  const name = $("playlist-name").value || "CrateSense set";
  const response = await post("playlist-export", { format, name, tracks: state.playlist.map((t) => t.content_key) });
  const blob = await response.blob();
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const link = el("a", { href: URL.createObjectURL(blob), download: match ? match[1] : "playlist" });
  document.body.append(link);
  link.click();
  link.remove();
}

// --- the overview --------------------------------------------------------------------------

function bars(target, counts, bin, label) {
  target.replaceChildren();
  const entries = Object.entries(counts).map(([k, v]) => [Number(k), v]).sort((a, b) => a[0] - b[0]);
  if (!entries.length) return;
  const low = entries[0][0], high = entries[entries.length - 1][0] + bin;
  const width = 700 / Math.max(1, (high - low) / bin), max = Math.max(...entries.map((e) => e[1]));
  for (const [value, count] of entries) {
    const x = 10 + (value - low) / bin * width, h = 170 * count / max;
    const bar = svg("rect", { x: x.toFixed(1), y: (180 - h).toFixed(1), width: Math.max(1, width - 1).toFixed(1),
                              height: h.toFixed(1), fill: "#2a6edc", "data-value": value });
    const title = svg("title");
    title.textContent = `${value}–${value + bin} ${label}: ${count}`;
    bar.append(title);
    target.append(bar);
  }
  for (const [value] of entries.filter((_, i) => i % Math.ceil(entries.length / 10) === 0)) {
    const text = svg("text", { x: (10 + (value - low) / bin * width).toFixed(1), y: "196", "font-size": "11" });
    text.textContent = value;
    target.append(text);
  }
}

async function loadOverview() {
  const overview = await api("overview");
  bars($("tempo-chart"), overview.tempo.counts, overview.tempo.bin, "BPM");
  wheel($("key-wheel"), overview.keys, null);
  bars($("loudness-chart"), overview.loudness.counts, overview.loudness.bin, "LUFS");
  wordBars($("genre-chart"), overview.genres);
  wordBars($("mood-chart"), overview.moods);
}

// --- the agent and privacy -------------------------------------------------------------------

function showStatus(status) {
  state.status = status;
  const busy = status.queued + status.analyzing;
  $("pill").textContent = status.state === "error" ? `${status.error_kind} error` : status.state +
    (busy ? ` · ${busy} to analyze` : "");
  $("pill").dataset.state = status.state;
  const progress = status.progress;
  $("progress-bar").style.width = progress && progress.total ? `${(100 * progress.done / progress.total).toFixed(1)}%` : "0%";
  $("progress-text").textContent = progress
    ? `${progress.done} of ${progress.total} files analyzed` +
      (progress.eta_seconds != null ? ` · about ${Math.ceil(progress.eta_seconds / 60)} min left` : "")
    : "nothing waiting for analysis";
  $("status-rows").tBodies[0].replaceChildren(...status.rows.map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, value))));
  $("problems").replaceChildren(...(status.problems.length ? status.problems.map((p) => el("li", { class: p.kind }, p.message))
    : [el("li", {}, "none")]));
  $("contribute").checked = status.contribute;
}

async function refreshStatus() {
  try { showStatus(await api("status")); } catch (error) { $("pill").textContent = error.message; }
}

async function loadFailures() {
  const answer = await api("failures");
  $("failures").replaceChildren(...(answer.files.length ? answer.files.map((f) => el("li", {}, `${f.path}: ${f.kind}: ${f.reason}`))
    : [el("li", {}, "none")]));
}

async function loadPreview() {
  const preview = await api("preview");
  $("preview").textContent = (preview.contribute ? "" : "# contribution is off: no observation leaves this machine\n") +
    JSON.stringify(preview.request, null, 2);
}

async function act(path, body, message) {
  try {
    const answer = await (await post(path, body)).json();
    if (answer.state) showStatus({ ...state.status, ...answer, rows: state.status ? state.status.rows : [] });
    $("privacy-message").textContent = message;
    refreshStatus();
    loadPreview();
  } catch (error) {
    $("privacy-message").textContent = error.message;
  }
}

function secondsUntil(hour) {
  const now = new Date(), when = new Date(now);
  when.setHours(hour, 0, 0, 0);
  if (when <= now) when.setDate(when.getDate() + 1);
  return Math.round((when - now) / 1000);
}

function showView(name) {
  for (const view of document.querySelectorAll(".view")) view.classList.toggle("active", view.id === name);
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  if (name === "overview") loadOverview();
  if (name === "agent") loadFailures();
  if (name === "privacy") loadPreview();
}

function start() {
  for (const select of [$("key"), $("compatible")]) for (const code of CODES) select.append(el("option", { value: code }, code));
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  let typing = null;
  for (const event of ["input", "change"]) {
    $("filters").addEventListener(event, () => {
      clearTimeout(typing);
      typing = setTimeout(() => { state.offset = 0; loadTracks(); }, 250);
    });
  }
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("previous").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadTracks(); });
  $("next-page").addEventListener("click", () => { state.offset += PAGE; loadTracks(); });
  $("start-playlist").addEventListener("click", () => { state.playlist = [state.current]; renderPlaylist(); });
  $("add-to-playlist").addEventListener("click", () => addToPlaylist(state.current));
  $("suggest").addEventListener("click", suggestNext);
  $("clear").addEventListener("click", () => { state.playlist = []; renderPlaylist(); });
  $("save-m3u").addEventListener("click", () => savePlaylist("m3u"));
  $("waveform").addEventListener("click", (event) => {  // play from where the overview is clicked
    if (!state.prep || !state.prep.duration) return;
    const box = event.currentTarget.getBoundingClientRect();
    playFrom(Math.max(0, Math.min(1, (event.clientX - box.left) / box.width)) * state.prep.duration);
  });
  $("player").addEventListener("timeupdate", drawPrep);  // the playhead follows the preview
  $("save-rekordbox").addEventListener("click", () => savePlaylist("rekordbox"));
  $("rescan").addEventListener("click", () => act("rescan", {}, "a rescan was asked for"));
  $("contribute").addEventListener("change", (event) =>
    act("settings", { contribute: event.target.checked }, event.target.checked ? "contribution is on" : "contribution is off"));
  $("pause-hour").addEventListener("click", () => act("pause", { seconds: 3600 }, "paused for an hour"));
  $("pause-night").addEventListener("click", () => act("pause", { seconds: secondsUntil(6) }, "paused until 06:00"));
  $("resume").addEventListener("click", () => act("resume", {}, "analysis resumed"));
  $("forget").addEventListener("click", () => {
    if (confirm("Delete every observation you contributed from the catalog, and stop contributing?")) {
      act("forget", {}, "deletion requested: the catalog erases everything you contributed");
    }
  });
  $("waveform").addEventListener("click", (event) => {  // click the overview: play from there
    if (!state.prep) return;
    const box = event.target.getBoundingClientRect();
    playFrom(Math.max(0, (event.clientX - box.left) / box.width * state.prep.duration));
  });
  for (const name of ["timeupdate", "seeked", "pause"]) $("player").addEventListener(name, drawPrep);
  loadTracks();
  loadWords().catch(() => {});
  refreshStatus();
  setInterval(refreshStatus, 2000);
}

document.addEventListener("DOMContentLoaded", start);
