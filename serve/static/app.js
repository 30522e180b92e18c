// The page: caption a clip (uploaded or recorded) and list the nearest sounds; search the library by text.
"use strict";

const $ = (id) => document.getElementById(id);
let health = null;      // what /health said: which models are loaded, the limits
let recorded = null;    // a WAV Blob recorded on this page, used instead of the chosen file
let recorder = null;

// POST and return the JSON answer, or throw an Error whose message a person can read.
async function call(url, body) {
  let response;
  try {
    response = await fetch(url, { method: "POST", body,
      headers: body instanceof FormData ? {} : { "Content-Type": "application/json" } });
  } catch (err) {
    throw new Error("The server cannot be reached. Is it running?");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { /* not JSON: use the status below */ }
  if (!response.ok) {
    // the server's reason says what went wrong (and, when busy, when to try again)
    throw new Error((data && data.error) || `The server answered ${response.status} ${response.statusText}.`);
  }
  return data;
}

function showError(id, err) {
  $(id).textContent = err ? err.message : "";
  $(id).hidden = !err;
}

function element(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

// Each found sound as a person judges it: its spectrogram, its caption, its name, length and score, a player.
function resultList(list, results) {
  list.replaceChildren(...results.map((r) => {
    const li = element("li");
    const picture = element("img", "spectrogram");
    picture.src = r.spectrogram; picture.alt = `spectrogram of ${r.file}`;
    const text = element("div", "about");
    text.append(element("div", "found-caption", r.caption || "(no caption)"));
    const meta = element("div", "meta");
    meta.append(element("span", "name", r.file),
                element("span", "duration", r.duration === null ? "" : `${r.duration.toFixed(1)} s`),
                element("span", "score", r.score.toFixed(3)));
    const player = element("audio");
    player.controls = true; player.preload = "none"; player.src = r.url;
    text.append(meta, player);
    const row = element("div", "row");  // beside the list's number, which a flex <li> would lose
    row.append(picture, text);
    li.append(row);
    return li;
  }));
}

function clip() {
  if (recorded) return { blob: recorded, name: "recording.wav" };
  const file = $("clip-file").files[0];
  return file ? { blob: file, name: file.name } : null;
}

function form(c, extra) {
  const data = new FormData();
  data.append("file", c.blob, c.name);
  for (const [k, v] of Object.entries(extra)) data.append(k, v);
  return data;
}

async function describe(event) {
  event.preventDefault();
  showError("clip-error", null);
  for (const id of ["caption", "clip-info"]) $(id).textContent = "";
  $("clip-spectrogram").hidden = true;
  for (const id of ["similar", "clip-labels"]) $(id).replaceChildren();
  const c = clip();
  if (!c) return showError("clip-error", new Error("Choose a sound file or record one first."));
  const maxBytes = health.limits.max_upload_mb * 1048576;
  if (c.blob.size > maxBytes) {
    return showError("clip-error", new Error(`The file is larger than ${health.limits.max_upload_mb} MB.`));
  }
  $("clip-go").disabled = true;
  try {
    // one request at a time: the server runs one inference at a time anyway
    if (health.captioner) {
      $("caption").textContent = "Listening…";
      const answer = await call("/api/caption", form(c, { beam_size: $("beam").value }));
      $("caption").textContent = answer.caption + (answer.silent ? " (the clip is silent)" : "");
      $("clip-spectrogram").src = answer.spectrogram; $("clip-spectrogram").hidden = false;
      const a = answer.audio;
      $("clip-info").textContent = `${a.format}, ${a.duration} s, ${a.sample_rate} Hz, ${a.channels} channel(s)`;
    }
    if (health.index) {
      const answer = await call("/api/similar", form(c, { top: 5 }));
      resultList($("similar"), answer.results);
      const labels = $("labels").value.trim();
      if (labels) {
        const ranked = await call("/api/labels", form(c, { labels }));
        $("clip-labels").replaceChildren(...ranked.labels.map((l) => {
          const li = document.createElement("li");
          li.textContent = l.label;
          const s = document.createElement("span");
          s.className = "score"; s.textContent = l.score.toFixed(3);
          li.append(s);
          return li;
        }));
      }
    }
  } catch (err) {
    if ($("caption").textContent === "Listening…") $("caption").textContent = "";
    showError("clip-error", err);
  } finally {
    $("clip-go").disabled = false;
  }
}

async function record() {
  showError("clip-error", null);
  if (recorder) {
    recorded = await recorder.stop();
    recorder = null;
    $("record").textContent = "Record"; $("record").classList.remove("recording");
    $("clip-player").src = URL.createObjectURL(recorded); $("clip-player").hidden = false;
    return;
  }
  if (!navigator.mediaDevices || !window.AudioContext) {
    return showError("clip-error", new Error("This browser cannot record here (it needs https or localhost)."));
  }
  try {
    recorder = await startRecording();
  } catch (err) {
    return showError("clip-error", new Error(`Cannot use the microphone: ${err.message}`));
  }
  $("record").textContent = "Stop"; $("record").classList.add("recording");
}

async function search(event) {
  event.preventDefault();
  showError("search-error", null);
  $("results").replaceChildren();
  $("search-go").disabled = true;
  try {
    const answer = await call("/api/search", JSON.stringify({ query: $("query").value, top: Number($("top").value) }));
    if (!answer.results.length) throw new Error("The library is empty.");
    resultList($("results"), answer.results);
  } catch (err) {
    showError("search-error", err);
  } finally {
    $("search-go").disabled = false;
  }
}

async function start() {
  try {
    const response = await fetch("/health");
    health = await response.json();
  } catch (err) {
    $("status").textContent = "The server cannot be reached. Is it running?";
    $("status").className = "error";
    return;
  }
  const l = health.limits;
  $("status").textContent = (health.captioner ? "Captioning ready. " : "No captioner loaded. ")
    + (health.index ? `${health.index_size} sounds in the library.` : "No sound library loaded.");
  $("clip-limits").textContent = `${l.formats.join(", ")}; up to ${l.max_upload_mb} MB and ${l.max_seconds} s.`;
  $("beam").max = l.max_beam; $("top").max = l.max_top; $("query").maxLength = l.max_query_chars;
  $("search-section").hidden = !health.index;
  $("clip-file").addEventListener("change", () => {
    recorded = null;
    const file = $("clip-file").files[0];
    if (file) { $("clip-player").src = URL.createObjectURL(file); $("clip-player").hidden = false; }
  });
  $("clip-form").addEventListener("submit", describe);
  $("record").addEventListener("click", record);
  $("search-form").addEventListener("submit", search);
  document.body.dataset.ready = "1";
}

start();
