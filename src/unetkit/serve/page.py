r"""The web page of `unetkit serve`: one HTML file, one style sheet, one script, all here.

No build step and nothing from the internet: the server sends these strings as they are.
The page sends each dropped image to `POST /api/segment`, shows the upload and tiling
progress it streams back, and draws the result itself from small previews (the image, the
class index of every pixel, each class's probability), so the opacity slider, the class
toggles, the views and the hover read-out are instant. Downloads are the server's files
(`/api/results/ID/...`): the mask is the very PNG `unetkit predict` writes.
"""

INDEX_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unetkit · segment images</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true"></span><b>unetkit</b><span class="tagline">segment images with a trained U-Net</span></div>
  <div class="model-pick">
    <label for="model">Model</label>
    <select id="model" aria-describedby="model-summary"></select>
    <span id="model-summary" class="muted"></span>
  </div>
</header>
<div id="banner" class="banner" role="alert" hidden></div>
<main class="layout">
  <aside class="panel left">
    <section id="drop" class="drop" tabindex="0" aria-label="Drop images here or choose files">
      <div class="drop-arrow" aria-hidden="true">&#8615;</div>
      <p class="drop-title">Drop images here</p>
      <p>or <label class="button pick">choose files<input id="files" type="file" multiple accept=".png,.jpg,.jpeg,.tif,.tiff,.bmp,.gif,.ppm,.pgm,.pbm,.pnm,.webp,image/png,image/jpeg,image/tiff,image/bmp,image/gif,image/webp"></label></p>
      <p class="hint" id="formats">PNG, JPEG, TIFF, BMP, GIF, PPM, WebP &middot; 8/16-bit, float, multi-band, GeoTIFF</p>
    </section>
    <div class="section-head"><h2>Images</h2><button id="csv" class="link" type="button" disabled title="Pixel counts of every class in every image, as a table">Table of areas (CSV)</button></div>
    <ol id="queue" class="queue"><li class="empty">No images yet.</li></ol>
  </aside>

  <section class="panel center">
    <div class="toolbar">
      <div class="seg" id="views" role="group" aria-label="View">
        <button type="button" data-view="overlay" class="on" title="The classes drawn over the image">Overlay</button>
        <button type="button" data-view="mask" title="The mask in its class colours, as in the PNG file">Mask</button>
        <button type="button" data-view="prob" title="How sure the model is, pixel by pixel, for one class">Probability</button>
        <button type="button" data-view="image" title="The image alone">Image</button>
      </div>
      <label class="opacity">Opacity <input id="opacity" type="range" min="0" max="100" step="1" value="50"><output id="opacity-value" for="opacity">50%</output></label>
      <label id="prob-pick" hidden>of <select id="prob-class"></select></label>
    </div>
    <div id="band-pick" class="toolbar bands" hidden>
      <span>Bands shown</span>
      <select id="band-mode" aria-label="Band display"><option value="rgb">as colour (red, green, blue)</option><option value="grey">one band in grey</option></select>
      <label class="band">R <select id="band-r"></select></label>
      <label class="band">G <select id="band-g"></select></label>
      <label class="band">B <select id="band-b"></select></label>
      <label class="band" id="band-grey-label" hidden>band <select id="band-grey"></select></label>
    </div>
    <div id="stage" class="stage" data-state="empty">
      <div id="placeholder" class="placeholder">
        <p><b>Drop an image anywhere on this page</b> to see what the model finds in it.</p>
        <p class="muted">Images stay in this server's memory; nothing is written to disk.</p>
      </div>
      <canvas id="view" hidden></canvas>
      <div id="busy" class="busy" hidden aria-live="polite">
        <div class="spinner" aria-hidden="true"></div>
        <div id="busy-text">Working&hellip;</div>
        <progress id="busy-bar" max="1" value="0"></progress>
      </div>
    </div>
    <div class="under">
      <div id="readout" class="readout" aria-live="off">Point at the image to read a pixel's class.</div>
      <div id="colorbar" class="colorbar" hidden title="probability"><span>0</span><i></i><span>1</span></div>
      <div class="seg small-seg" id="zoom" role="group" aria-label="Zoom">
        <button type="button" data-zoom="fit" class="on" title="Fit the image to the window">Fit</button>
        <button type="button" data-zoom="1" title="One image pixel per screen pixel">1:1</button>
        <button type="button" data-zoom="2">2&times;</button>
        <button type="button" data-zoom="4">4&times;</button>
      </div>
    </div>
  </section>

  <aside class="panel right">
    <div class="section-head"><h2>Classes</h2><span id="result-name" class="muted"></span></div>
    <table id="legend" class="legend">
      <thead><tr><th scope="col" title="Show or hide">Show</th><th scope="col">Class</th><th scope="col" class="num">Share</th><th scope="col" class="num">Area</th></tr></thead>
      <tbody><tr class="empty"><td colspan="4">The classes appear here.</td></tr></tbody>
    </table>
    <div class="pixel-size">
      <label for="pixel-size">Pixel size</label>
      <input id="pixel-size" type="number" min="0" step="any" placeholder="0.325" inputmode="decimal">
      <select id="unit" aria-label="Unit"><option>µm</option><option>nm</option><option>mm</option><option>m</option></select>
      <span class="muted small">(side of one pixel: areas in real units)</span>
    </div>
    <h2>Download</h2>
    <div class="downloads">
      <button type="button" id="download-mask" class="button primary" disabled>Mask (PNG)</button>
      <button type="button" id="download-geo" class="button" hidden disabled>Mask (GeoTIFF)</button>
      <button type="button" id="download-overlay" class="button" disabled>Overlay (PNG)</button>
      <button type="button" id="download-prob" class="button" disabled>Probabilities (TIFF)</button>
    </div>
    <p class="small muted" id="download-note">The mask holds one class id per pixel, with the class colours as its palette: the same file <code>unetkit predict</code> writes. The overlay is the picture as shown (bands, opacity, classes).</p>
    <details id="card-box" open>
      <summary><h2>About the model</h2></summary>
      <div id="card" class="card"></div>
    </details>
  </aside>
</main>
<footer class="foot muted">
  JSON API: <code>POST /api/predict</code> (an image &rarr; its mask), <code>GET /api/models</code>.
  Label Studio: add this address as an ML backend.
</footer>
</body>
</html>
"""

STYLE_CSS = r""":root {
  --bg: #f4f5f7; --panel: #ffffff; --line: #dfe3e8; --text: #1d232b; --muted: #5f6b7a;
  --accent: #1f6feb; --accent-soft: #e7f0fe; --bad: #c62828; --good: #1b7f3b; --stage: #20242a;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 14px; color: var(--text); background: var(--bg);
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; min-height: 100vh; display: flex; flex-direction: column; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 18px 0 8px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; background: #eef1f4; padding: 0 3px; border-radius: 3px; }
.muted { color: var(--muted); }
.small { font-size: 12px; line-height: 1.45; }
.top { display: flex; align-items: center; justify-content: space-between; gap: 16px; padding: 10px 18px;
  background: var(--panel); border-bottom: 1px solid var(--line); flex-wrap: wrap; }
.brand { display: flex; align-items: baseline; gap: 10px; font-size: 18px; }
.brand .logo { width: 18px; height: 18px; align-self: center; border-radius: 4px;
  background: linear-gradient(135deg, #1f6feb 0 50%, #f2a33a 50% 100%); }
.tagline { font-size: 13px; color: var(--muted); }
.model-pick { display: flex; align-items: center; gap: 8px; }
.model-pick label { font-weight: 600; }
select, input[type=number] { font: inherit; padding: 4px 6px; border: 1px solid var(--line); border-radius: 6px; background: #fff; color: var(--text); }
.banner { margin: 10px 18px 0; padding: 10px 14px; border-radius: 8px; background: #fdecea; color: var(--bad); border: 1px solid #f5c2c0; }
.layout { flex: 1; display: grid; grid-template-columns: 250px minmax(0, 1fr) 370px; gap: 14px; padding: 14px 18px; }
@media (max-width: 1100px) { .layout { grid-template-columns: 1fr; } }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 14px; min-width: 0; }
.left h2:first-child, .right h2:first-child { margin-top: 0; }
.section-head { display: flex; align-items: baseline; justify-content: space-between; gap: 8px; }
.section-head h2 { margin-top: 18px; }
.right .section-head h2 { margin-top: 0; }
.drop { border: 2px dashed #b8c2cf; border-radius: 10px; padding: 18px 12px; text-align: center; background: #fafbfc; transition: background .15s, border-color .15s; }
.drop p { margin: 6px 0; }
.drop.over, body.dragging .drop { border-color: var(--accent); background: var(--accent-soft); }
.drop-arrow { font-size: 28px; color: var(--accent); line-height: 1; }
.drop-title { font-weight: 600; font-size: 15px; }
.hint { font-size: 12px; color: var(--muted); }
.button { display: inline-block; font: inherit; padding: 6px 12px; border-radius: 6px; border: 1px solid var(--line); background: #fff; color: var(--text); cursor: pointer; }
.button:hover:not(:disabled) { border-color: var(--accent); }
.button:disabled { opacity: .45; cursor: default; }
.button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
.pick input { display: none; }
.link { font: inherit; font-size: 12px; background: none; border: none; color: var(--accent); cursor: pointer; padding: 0; }
.link:disabled { color: var(--muted); opacity: .6; cursor: default; }
.queue { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 6px; }
.queue .empty { color: var(--muted); }
.queue li.item { border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px; cursor: pointer; background: #fff; }
.queue li.item:hover { border-color: #b8c2cf; }
.queue li.item.current { border-color: var(--accent); box-shadow: 0 0 0 2px var(--accent-soft); }
.queue .name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.queue .state { font-size: 12px; color: var(--muted); margin-top: 2px; }
.queue .item.failed .state { color: var(--bad); }
.queue .item.done .state { color: var(--good); }
.queue progress { width: 100%; height: 6px; margin-top: 4px; }
.toolbar { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; margin-bottom: 10px; }
.toolbar.bands { font-size: 13px; gap: 10px; padding: 6px 10px; background: #f7f8fa; border-radius: 8px; }
.seg { display: inline-flex; border: 1px solid var(--line); border-radius: 7px; overflow: hidden; }
.seg button { font: inherit; border: none; background: #fff; padding: 6px 11px; cursor: pointer; color: var(--text); }
.seg button + button { border-left: 1px solid var(--line); }
.seg button.on { background: var(--accent); color: #fff; }
.opacity { display: inline-flex; align-items: center; gap: 8px; }
.opacity input { width: 150px; accent-color: var(--accent); }
.small-seg button { padding: 3px 9px; font-size: 13px; }
.opacity output { min-width: 3.2em; font-variant-numeric: tabular-nums; }
.stage { position: relative; background: var(--stage); border-radius: 8px; min-height: 420px; height: calc(100vh - 215px);
  overflow: auto; display: grid; place-items: center; }
.stage canvas { display: block; margin: auto; image-rendering: auto; cursor: crosshair; }
.stage canvas.pixelated { image-rendering: pixelated; }
.placeholder { color: #cfd6de; text-align: center; max-width: 420px; line-height: 1.5; }
.placeholder .muted { color: #98a3af; }
.busy { position: absolute; inset: 0; display: flex; flex-direction: column; align-items: center; justify-content: center; gap: 12px;
  background: rgba(20, 24, 29, .72); color: #fff; font-size: 15px; }
.busy progress { width: 260px; height: 8px; }
.spinner { width: 34px; height: 34px; border: 3px solid rgba(255,255,255,.25); border-top-color: #fff; border-radius: 50%; animation: spin 0.9s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
.under { display: flex; align-items: center; gap: 12px; min-height: 30px; margin-top: 8px; }
.under .readout { flex: 1; }
.readout { font-variant-numeric: tabular-nums; color: var(--muted); font-size: 13px; }
.colorbar { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; color: var(--muted); }
.colorbar i { display: inline-block; width: 160px; height: 10px; border-radius: 3px;
  background: linear-gradient(90deg, #440154, #482475, #414487, #355f8d, #2a788e, #21918c, #22a884, #44bf70, #7ad151, #bddf26, #fde725); }
.legend { width: 100%; border-collapse: collapse; }
.legend th { text-align: left; font-size: 12px; font-weight: 600; color: var(--muted); padding: 4px 6px; border-bottom: 1px solid var(--line); }
.legend td { padding: 6px 4px; border-bottom: 1px solid #eef0f3; vertical-align: middle; }
.legend td:first-child, .legend th:first-child { width: 42px; text-align: center; }
.legend .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.legend tr.off td.cls { color: var(--muted); text-decoration: line-through; }
.legend .empty td { color: var(--muted); }
.legend .cls { display: flex; align-items: center; gap: 8px; font-weight: 600; }
.swatch { width: 16px; height: 16px; border-radius: 4px; border: 1px solid rgba(0,0,0,.25); flex: none; }
.swatch.clear { background: repeating-linear-gradient(45deg, #fff 0 3px, #d5dbe2 3px 6px); }
.bar { height: 4px; background: #e9edf1; border-radius: 2px; margin-top: 3px; overflow: hidden; }
.bar i { display: block; height: 100%; }
.legend input[type=checkbox] { width: 16px; height: 16px; accent-color: var(--accent); }
.pixel-size { display: flex; align-items: center; gap: 6px; flex-wrap: wrap; margin-top: 10px; font-size: 13px; }
.pixel-size input { width: 90px; }
.downloads { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.downloads .button { font-size: 13px; padding: 6px 8px; }
.card dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0; }
.card dt { color: var(--muted); }
.card dd { margin: 0; overflow-wrap: anywhere; }
.card table { width: 100%; border-collapse: collapse; margin-top: 8px; font-size: 12px; }
.card th, .card td { padding: 3px 4px; border-bottom: 1px solid #eef0f3; text-align: left; }
.card td.num, .card th.num { text-align: right; font-variant-numeric: tabular-nums; }
.card h3 { font-size: 12px; margin: 12px 0 4px; color: var(--muted); font-weight: 600; }
details summary { cursor: pointer; list-style: none; }
details summary::-webkit-details-marker { display: none; }
details summary h2 { display: inline-block; }
details summary h2::after { content: " \25BE"; }
details:not([open]) summary h2::after { content: " \25B8"; }
.foot { padding: 8px 18px 14px; font-size: 12px; }
"""

SCRIPT_JS = r""""use strict";
// unetkit serve: the page. Talks to /api/models, /api/segment and /api/results/ID/...
(function () {
  const $ = (id) => document.getElementById(id);
  const VIRIDIS = lut([[68,1,84],[72,36,117],[65,68,135],[53,95,141],[42,120,142],[33,145,140],
                       [34,168,132],[68,191,112],[122,209,81],[189,223,38],[253,231,37]]);
  const UNITS = {"µm": 1e-6, "nm": 1e-9, "mm": 1e-3, "m": 1};
  const state = {
    models: [], cards: {}, limits: {}, model: null, items: [], current: null, sending: false,
    view: "overlay", opacity: 0.5, zoom: "fit", hidden: new Set(), prob: 0,
    opacities: {overlay: 0.5, mask: 1, prob: 0.7, image: 0},  // each view keeps its own
  };
  let nextId = 1;

  // --- start ---------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    wire();
    fetch("/api/models").then(checked).then((info) => {
      state.models = info.models; state.limits = info.limits || {};
      for (const card of info.models) state.cards[card.name] = card;
      const select = $("model");
      for (const card of info.models) select.add(new Option(card.name, card.name));
      select.value = info.default; state.model = info.default;
      select.disabled = info.models.length < 2;
      if (state.limits.max_upload_mb) {
        $("formats").textContent += " · up to " + Math.round(state.limits.max_upload_mb) + " MB each";
      }
      showCard();
    }).catch((error) => banner("The server did not answer (" + error.message + "). Is `unetkit serve` still running?"));
  });

  function wire() {
    $("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
    const drop = $("drop");
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("files").click(); } });
    let depth = 0;
    window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; document.body.classList.add("dragging"); } });
    window.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) document.body.classList.remove("dragging"); });
    window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
    window.addEventListener("drop", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault(); depth = 0; document.body.classList.remove("dragging");
      addFiles(e.dataTransfer.files);
    });
    $("model").addEventListener("change", (e) => { state.model = e.target.value; showCard(); });
    for (const button of $("views").querySelectorAll("button")) {
      button.addEventListener("click", () => setView(button.dataset.view));
    }
    for (const button of $("zoom").querySelectorAll("button")) {
      button.addEventListener("click", () => {
        state.zoom = button.dataset.zoom;
        for (const b of $("zoom").querySelectorAll("button")) b.classList.toggle("on", b === button);
        fit();
      });
    }
    $("opacity").addEventListener("input", (e) => {
      state.opacity = Number(e.target.value) / 100;
      state.opacities[state.view] = state.opacity;
      $("opacity-value").textContent = e.target.value + "%";
      draw();
    });
    $("prob-class").addEventListener("change", (e) => { state.prob = Number(e.target.value); draw(); });
    for (const id of ["band-mode", "band-r", "band-g", "band-b", "band-grey"]) $(id).addEventListener("change", changeBands);
    const size = $("pixel-size"), unit = $("unit");
    size.value = localStorage.getItem("unetkit.pixelSize") || "";
    unit.value = localStorage.getItem("unetkit.unit") || "µm";
    size.addEventListener("input", () => { localStorage.setItem("unetkit.pixelSize", size.value); legend(); });
    unit.addEventListener("change", () => { localStorage.setItem("unetkit.unit", unit.value); legend(); });
    $("download-mask").addEventListener("click", () => download("mask.png", ""));
    $("download-geo").addEventListener("click", () => download("mask.tif", ""));
    $("download-prob").addEventListener("click", () => download("probabilities.tif", ""));
    $("download-overlay").addEventListener("click", () => download("overlay.png", overlayQuery()));
    $("csv").addEventListener("click", downloadTable);
    const canvas = $("view");
    canvas.addEventListener("mousemove", readout);
    canvas.addEventListener("mouseleave", () => { $("readout").textContent = "Point at the image to read a pixel's class."; });
    window.addEventListener("resize", fit);
  }

  function hasFiles(e) { return e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files"); }

  // --- the queue -----------------------------------------------------------------------------
  function addFiles(files) {
    for (const file of Array.from(files || [])) {
      const item = {id: nextId++, file, name: file.name, model: state.model, status: "waiting",
                    text: "In line", fraction: null, result: null, px: null, error: null};
      state.items.push(item);
      if (!state.current || state.current.status === "done" || state.current.status === "failed") select(item);
    }
    queue(); pump();
  }

  function pump() {
    if (state.sending) return;
    const item = state.items.find((i) => i.status === "waiting");
    if (!item) return;
    state.sending = true;
    send(item).finally(() => { state.sending = false; pump(); });
  }

  function send(item) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      const query = "?model=" + encodeURIComponent(item.model) + "&name=" + encodeURIComponent(item.name);
      xhr.open("POST", "/api/segment" + query);
      let seen = 0;
      const lines = () => {
        const text = xhr.responseText;
        let end;
        while ((end = text.indexOf("\n", seen)) >= 0) {
          const line = text.slice(seen, end); seen = end + 1;
          if (line.trim()) event(item, JSON.parse(line));
        }
      };
      update(item, "uploading", "Uploading…", 0);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) update(item, "uploading", "Uploading… " + pct(e.loaded / e.total), e.loaded / e.total); };
      xhr.upload.onload = () => update(item, "reading", "Reading the image…", null);
      xhr.onprogress = () => { if (xhr.status === 200) lines(); };
      xhr.onload = () => {
        if (xhr.status === 200) { lines(); if (item.status !== "done" && item.status !== "failed") fail(item, "The answer was cut short; try again."); }
        else fail(item, errorText(xhr));
        resolve();
      };
      xhr.onerror = () => { fail(item, "The server could not be reached; is `unetkit serve` still running?"); resolve(); };
      const form = new FormData();
      form.append("file", item.file, item.name);
      form.append("model", item.model);
      xhr.send(form);
    });
  }

  function event(item, ev) {
    if (ev.error) { fail(item, ev.error); return; }
    if (ev.stage === "segmenting") {
      const size = ev.width ? fmt(ev.width) + " × " + fmt(ev.height) + " px, " : "";
      if (ev.width) item.size = size;
      const tiles = ev.tiles > 1 ? fmt(ev.tiles) + " tiles" : "one pass";
      const f = ev.total ? ev.done / ev.total : 0;
      update(item, "segmenting", "Segmenting " + (item.size || "") + tiles + (ev.tiles > 1 ? " · " + pct(f) : "…"), ev.tiles > 1 ? f : null);
    } else if (ev.stage === "drawing") {
      update(item, "segmenting", "Drawing the result…", 1);
    } else if (ev.stage === "done") {
      item.result = ev.result;
      decode(item).then(() => {
        const r = item.result;
        update(item, "done", fmt(r.width) + " × " + fmt(r.height) + " px · " + seconds(r.seconds), null);
        if (state.current === item) show(); else item.px = null;  // drawn again when chosen: the page stays small
        $("csv").disabled = false;
      }).catch((error) => fail(item, "The page could not draw the result (" + error.message + ")."));
    }
  }

  function update(item, status, text, fraction) {
    item.status = status; item.text = text; item.fraction = fraction;
    queue();
    if (state.current === item) busy();
  }

  function fail(item, message) {
    item.status = "failed"; item.error = message; item.text = message; item.fraction = null;
    queue();
    if (state.current === item) show();
  }

  function queue() {
    const list = $("queue");
    list.textContent = "";
    if (!state.items.length) { list.innerHTML = '<li class="empty">No images yet.</li>'; return; }
    for (const item of state.items) {
      const li = document.createElement("li");
      li.className = "item " + item.status + (item === state.current ? " current" : "");
      li.dataset.item = item.id;
      li.title = item.status === "done" ? "Show this image" : item.text;
      const name = document.createElement("div"); name.className = "name"; name.textContent = item.name;
      const line = document.createElement("div"); line.className = "state";
      line.textContent = (item.status === "done" ? "✓ " : item.status === "failed" ? "✗ " : "") + item.text;
      li.append(name, line);
      if (item.status !== "done" && item.status !== "failed") {
        const bar = document.createElement("progress");
        if (item.fraction !== null) { bar.max = 1; bar.value = item.fraction; }
        li.append(bar);
      }
      if (state.models.length > 1 && item.model) {
        const by = document.createElement("div"); by.className = "state"; by.textContent = "model " + item.model; li.append(by);
      }
      li.addEventListener("click", () => select(item));
      list.append(li);
    }
  }

  function select(item) {
    const before = state.current;
    if (before && before !== item && before.status === "done") before.px = null;  // previews of one image at a time
    state.current = item; queue();
    if (item.status === "done" && !item.px) {
      decode(item).then(() => { if (state.current === item) show(); })
        .catch((error) => fail(item, "The page could not draw the result (" + error.message + ")."));
      return;
    }
    show();
  }

  // --- decoding the previews -----------------------------------------------------------------
  async function pixels(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], {type: "image/png"}),
                                           {colorSpaceConversion: "none", premultiplyAlpha: "none"});
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width; canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    ctx.drawImage(bitmap, 0, 0);
    return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  }

  async function decode(item) {
    const r = item.result;
    const [display, labels, ...probs] = await Promise.all([pixels(r.display), pixels(r.labels),
                                                          ...r.probabilities.map((p) => pixels(p.png))]);
    item.px = {display, labels, probs};
    item.bands = r.default_bands.slice();
  }

  // --- showing a result ----------------------------------------------------------------------
  function show() {
    const item = state.current, canvas = $("view"), stage = $("stage");
    $("placeholder").hidden = !!item;
    if (!item) { canvas.hidden = true; stage.dataset.state = "empty"; return; }
    busy();
    if (item.status === "failed") {
      canvas.hidden = true; $("placeholder").hidden = false; stage.dataset.state = "error";
      $("placeholder").innerHTML = "";
      const p = document.createElement("p"); p.innerHTML = "<b>" + escapeHtml(item.name) + "</b> could not be segmented:";
      const q = document.createElement("p"); q.className = "error-text"; q.textContent = item.error;
      $("placeholder").append(p, q);
    }
    const ready = item.status === "done" && item.px;
    for (const id of ["download-mask", "download-overlay", "download-prob"]) $(id).disabled = !(ready && item.result.kept);
    $("download-geo").hidden = !(ready && item.result.geo);
    $("download-geo").disabled = !(ready && item.result.geo && item.result.kept);
    $("download-mask").textContent = ready && item.result.mask_extension === ".tif" ? "Mask (TIFF)" : "Mask (PNG)";
    $("download-note").classList.toggle("warn", !!(ready && !item.result.kept));
    if (ready && !item.result.kept) $("download-note").textContent = "This image is too large to keep for downloads; start the server with a larger --keep-mb.";
    if (!ready) { if (item.status !== "failed") canvas.hidden = true; legend(); return; }
    const r = item.result;
    $("result-name").textContent = item.name;
    state.hidden = item.hidden || (item.hidden = new Set());
    // probability choices
    const pick = $("prob-class"); pick.textContent = "";
    r.probabilities.forEach((p, k) => pick.add(new Option(p.name, String(k))));
    if (state.prob >= r.probabilities.length) state.prob = r.probabilities.length > 1 ? 1 : 0;
    if (state.prob === 0 && r.probabilities.length > 1 && r.task !== "multilabel") state.prob = 1;
    pick.value = String(state.prob);
    bandControls(item);
    canvas.hidden = false;
    canvas.width = r.preview.width; canvas.height = r.preview.height;
    stage.dataset.state = "ready";
    draw(); fit(); legend();
  }

  function busy() {
    const item = state.current, box = $("busy");
    const working = item && item.status !== "done" && item.status !== "failed";
    box.hidden = !working;
    if (!working) return;
    $("stage").dataset.state = "busy";
    $("placeholder").hidden = true;
    $("busy-text").textContent = item.name + ": " + item.text;
    const bar = $("busy-bar");
    if (item.fraction === null) bar.removeAttribute("value"); else bar.value = item.fraction;
  }

  function setView(view) {
    state.view = view;
    state.opacity = state.opacities[view];
    const slider = $("opacity");
    slider.value = String(Math.round(state.opacity * 100));
    slider.disabled = view === "image";
    $("opacity-value").textContent = view === "image" ? "–" : slider.value + "%";
    for (const b of $("views").querySelectorAll("button")) b.classList.toggle("on", b.dataset.view === view);
    $("prob-pick").hidden = view !== "prob";
    $("colorbar").hidden = view !== "prob";
    draw(); legend();
  }

  function colours(r) {
    return r.classes.map((c) => {
      if (state.hidden.has(c.index)) return null;
      return state.view === "mask" ? c.color : c.overlay_color;
    });
  }

  function draw() {
    const item = state.current;
    if (!item || !item.px || item.status !== "done") return;
    const r = item.result, canvas = $("view"), ctx = canvas.getContext("2d");
    const w = r.preview.width, h = r.preview.height, n = w * h;
    const out = ctx.createImageData(w, h), d = out.data, img = item.px.display, lab = item.px.labels;
    d.set(img);
    const a = state.opacity, b = 1 - a;
    if (state.view === "prob") {
      const p = item.px.probs[state.prob] || item.px.probs[0];
      for (let i = 0, j = 0; i < n; i++, j += 4) {
        if (r.task !== "multilabel" && lab[j] === 255) continue;
        const c = VIRIDIS[p[j]];
        d[j] = b * img[j] + a * c[0] + 0.5; d[j + 1] = b * img[j + 1] + a * c[1] + 0.5; d[j + 2] = b * img[j + 2] + a * c[2] + 0.5;
      }
    } else if (state.view !== "image") {
      const cols = colours(r);
      if (r.task === "multilabel") {
        for (let i = 0, j = 0; i < n; i++, j += 4) {
          const bits = (lab[j] << 16) | (lab[j + 1] << 8) | lab[j + 2];
          if (!bits) continue;
          for (let k = 0; k < cols.length && k < 24; k++) {
            const c = cols[k];
            if (c && (bits >> k) & 1) { d[j] = b * d[j] + a * c[0] + 0.5; d[j + 1] = b * d[j + 1] + a * c[1] + 0.5; d[j + 2] = b * d[j + 2] + a * c[2] + 0.5; }
          }
        }
      } else {
        for (let i = 0, j = 0; i < n; i++, j += 4) {
          const c = cols[lab[j]];
          if (!c) continue;
          d[j] = b * img[j] + a * c[0] + 0.5; d[j + 1] = b * img[j + 1] + a * c[1] + 0.5; d[j + 2] = b * img[j + 2] + a * c[2] + 0.5;
        }
      }
    }
    ctx.putImageData(out, 0, 0);
  }

  function fit() {
    const item = state.current, canvas = $("view");
    if (!item || !item.result || canvas.hidden) return;
    const r = item.result, stage = $("stage");
    let scale;
    if (state.zoom === "fit") {
      scale = Math.min((stage.clientWidth - 16) / r.preview.width, (stage.clientHeight - 16) / r.preview.height);
      scale = Math.max(0.05, Math.min(scale, 16));
    } else {
      scale = Number(state.zoom) / r.preview.scale;
    }
    canvas.style.width = Math.round(r.preview.width * scale) + "px";
    canvas.style.height = Math.round(r.preview.height * scale) + "px";
    canvas.classList.toggle("pixelated", scale > 1.5);
    stage.style.placeItems = state.zoom === "fit" ? "center" : "start";
  }

  function readout(e) {
    const item = state.current;
    if (!item || !item.px) return;
    const r = item.result, canvas = e.target;
    const x = Math.min(r.preview.width - 1, Math.floor(e.offsetX / canvas.clientWidth * r.preview.width));
    const y = Math.min(r.preview.height - 1, Math.floor(e.offsetY / canvas.clientHeight * r.preview.height));
    const j = (y * r.preview.width + x) * 4;
    const ox = Math.floor(x * r.preview.scale), oy = Math.floor(y * r.preview.scale);
    let what;
    if (r.task === "multilabel") {
      const bits = (item.px.labels[j] << 16) | (item.px.labels[j + 1] << 8) | item.px.labels[j + 2];
      const names = r.classes.filter((c) => (bits >> c.index) & 1).map((c) => c.name);
      what = names.length ? names.join(", ") : "no label";
    } else {
      const k = item.px.labels[j];
      what = k === 255 ? "no data" : (r.classes[k] ? r.classes[k].name : "class " + k);
    }
    const p = r.probabilities[state.prob];
    const prob = p ? " · p(" + p.name + ") = " + (item.px.probs[state.prob][j] / 255).toFixed(2) : "";
    $("readout").textContent = "x " + fmt(ox) + ", y " + fmt(oy) + " · " + what + prob;
  }

  // --- the legend ----------------------------------------------------------------------------
  function legend() {
    const body = $("legend").tBodies[0], item = state.current;
    body.textContent = "";
    const r = item && item.status === "done" && item.result;
    if (!r) {
      const card = state.cards[state.model];
      if (!card) { body.innerHTML = '<tr class="empty"><td colspan="4">The classes appear here.</td></tr>'; return; }
      for (const c of card.classes) body.append(row(c, null, null));
      return;
    }
    for (const c of r.classes) body.append(row(c, r, item));
  }

  function row(c, r, item) {
    const tr = document.createElement("tr");
    const off = state.hidden.has(c.index) && !!r;
    tr.className = off ? "off" : "";
    const show = document.createElement("td");
    const box = document.createElement("input"); box.type = "checkbox"; box.checked = !off; box.disabled = !r;
    box.dataset.class = c.index; box.setAttribute("aria-label", "Show " + c.name);
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(c.index); else state.hidden.add(c.index);
      draw(); legend();
    });
    show.append(box);
    const name = document.createElement("td");
    const cell = document.createElement("div"); cell.className = "cls";
    const colour = state.view === "mask" ? c.color : c.overlay_color;
    const sw = document.createElement("span"); sw.className = "swatch" + (colour ? "" : " clear");
    if (colour) sw.style.background = "rgb(" + colour.join(",") + ")";
    sw.title = colour ? "drawn in rgb(" + colour.join(", ") + ")" : "not drawn over the image";
    const label = document.createElement("span"); label.textContent = c.name;
    cell.append(sw, label);
    name.append(cell);
    const share = document.createElement("td"); share.className = "num";
    const area = document.createElement("td"); area.className = "num";
    if (r) {
      share.textContent = pct(c.share, 1);
      const bar = document.createElement("div"); bar.className = "bar";
      const fill = document.createElement("i"); fill.style.width = Math.max(0, Math.min(100, c.share * 100)) + "%";
      fill.style.background = "rgb(" + (c.overlay_color || c.color).join(",") + ")";
      if (!c.overlay_color && !c.color.some((v) => v)) fill.style.background = "#9aa5b1";
      bar.append(fill); share.append(bar);
      area.textContent = fmt(c.pixels) + " px";
      const real = realArea(c.pixels);
      if (real) { const s = document.createElement("div"); s.className = "muted small"; s.textContent = real; area.append(s); }
    } else {
      share.textContent = "–"; area.textContent = "";
    }
    tr.append(show, name, share, area);
    return tr;
  }

  function realArea(pixels) {
    const size = parseFloat($("pixel-size").value);
    if (!(size > 0)) return "";
    const unit = $("unit").value;
    return fmtNumber(pixels * size * size) + " " + unit + "²";
  }

  // --- bands ---------------------------------------------------------------------------------
  function bandControls(item) {
    const r = item.result, box = $("band-pick");
    box.hidden = r.bands < 2;
    if (r.bands < 2) return;
    for (const id of ["band-r", "band-g", "band-b", "band-grey"]) {
      const s = $(id); s.textContent = "";
      for (let b = 1; b <= r.bands; b++) s.add(new Option(String(b), String(b)));
    }
    const bands = item.bands;
    const grey = bands.length === 1;
    $("band-mode").value = grey ? "grey" : "rgb";
    if (grey) $("band-grey").value = String(bands[0]);
    else { $("band-r").value = String(bands[0]); $("band-g").value = String(bands[1]); $("band-b").value = String(bands[2]); }
    bandVisibility();
  }

  function bandVisibility() {
    const grey = $("band-mode").value === "grey";
    for (const id of ["band-r", "band-g", "band-b"]) $(id).parentElement.hidden = grey;
    $("band-grey-label").hidden = !grey;
  }

  function changeBands() {
    const item = state.current;
    if (!item || !item.result) return;
    bandVisibility();
    const bands = $("band-mode").value === "grey" ? [Number($("band-grey").value)]
      : [Number($("band-r").value), Number($("band-g").value), Number($("band-b").value)];
    item.bands = bands;
    fetch("/api/results/" + item.result.id + "/display.png?bands=" + bands.join(","))
      .then((response) => response.ok ? response.blob() : response.json().then((e) => { throw new Error(e.error); }))
      .then((blob) => createImageBitmap(blob, {colorSpaceConversion: "none", premultiplyAlpha: "none"}))
      .then((bitmap) => {
        const c = document.createElement("canvas"); c.width = bitmap.width; c.height = bitmap.height;
        const ctx = c.getContext("2d", {willReadFrequently: true}); ctx.drawImage(bitmap, 0, 0);
        item.px.display = ctx.getImageData(0, 0, c.width, c.height).data;
        draw();
      }).catch((error) => banner(error.message));
  }

  // --- downloads -----------------------------------------------------------------------------
  function overlayQuery() {
    const item = state.current;
    const hidden = Array.from(state.hidden).sort((x, y) => x - y);
    const parts = ["alpha=" + state.opacity.toFixed(2)];
    if (hidden.length) parts.push("hide=" + hidden.join(","));
    if (item && item.bands) parts.push("bands=" + item.bands.join(","));
    return "?" + parts.join("&");
  }

  function download(what, query) {
    const item = state.current;
    if (!item || !item.result) return;
    fetch("/api/results/" + item.result.id + "/" + what + query).then((response) => {
      if (!response.ok) return response.json().then((e) => { throw new Error(e.error); });
      const disposition = response.headers.get("Content-Disposition") || "";
      const match = /filename="([^"]+)"/.exec(disposition);
      return response.blob().then((blob) => save(blob, match ? match[1] : what));
    }).catch((error) => banner(error.message));
  }

  function save(blob, filename) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url; a.download = filename; a.hidden = true;
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function downloadTable() {
    const size = parseFloat($("pixel-size").value), unit = $("unit").value;
    const real = size > 0;
    const head = ["image", "model", "class_id", "class", "pixels", "share_of_image"];
    if (real) head.push("area_" + unit.replace("µ", "u") + "2");
    const rows = [head];
    for (const item of state.items) {
      if (item.status !== "done") continue;
      const r = item.result;
      for (const c of r.classes) {
        const line = [item.name, r.model, c.id, c.name, c.pixels, c.share.toFixed(6)];
        if (real) line.push((c.pixels * size * size).toPrecision(8));
        rows.push(line);
      }
    }
    const text = rows.map((line) => line.map(csvCell).join(",")).join("\r\n") + "\r\n";
    save(new Blob([text], {type: "text/csv"}), "areas.csv");
  }

  function csvCell(value) {
    const text = String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  // --- the model card ------------------------------------------------------------------------
  function showCard() {
    const card = state.cards[state.model], box = $("card");
    box.textContent = "";
    if (!card) return;
    const classes = card.classes.map((c) => c.name).join(", ");
    $("model-summary").textContent = card.task + " · " + card.bands + " band" + (card.bands > 1 ? "s" : "") + " · " + card.classes.length + " classes";
    const dl = document.createElement("dl");
    const add = (term, value) => {
      if (value === null || value === undefined || value === "") return;
      const dt = document.createElement("dt"); dt.textContent = term;
      const dd = document.createElement("dd"); dd.textContent = value;
      dl.append(dt, dd);
    };
    add("Name", card.name);
    add("Task", {binary: "binary (one class against the background)", multiclass: "multiclass (one class per pixel)",
                 multilabel: "multi-label (several labels per pixel)"}[card.task] || card.task);
    add("Classes", classes);
    const input = card.input || {};
    let range = "";
    if (input.low && input.high) {
      const spans = input.low.map((v, i) => short(v) + "–" + short(input.high[i]));
      range = " · range " + (spans.every((t) => t === spans[0]) ? spans[0] + (spans.length > 1 ? " in every band" : "") : spans.join(", "));
    }
    add("Input", card.bands + " band" + (card.bands > 1 ? "s" : "") + (input.dtype ? " of " + input.dtype : "") + range);
    add("Patch size", card.patch_size ? card.patch_size + " px (tiles of " + card.tile + " px)" : "tiles of " + card.tile + " px");
    add("Trained for", card.epoch !== null && card.epoch !== undefined ? card.epoch + " epoch" + (card.epoch === 1 ? "" : "s") : null);
    if (card.task !== "multiclass") add("Threshold", short(card.threshold));
    const net = card.network || {};
    add("Network", "U-Net, depth " + net.depth + ", " + net.base_channels + " base channels, " + net.up_mode + " up-sampling");
    add("Runs on", card.device + (card.precision ? " " + card.precision : "") + (card.tta && card.tta !== "none" ? " · TTA " + card.tta : ""));
    add("Folder", card.source);
    box.append(dl);
    const scores = card.scores;
    if (scores && typeof scores === "object") {
      const h = document.createElement("h3"); h.textContent = "Validation scores" + (scores.images ? " (" + scores.images + " images)" : "");
      box.append(h);
      const sdl = document.createElement("dl");
      const pairs = [["headline", "Dice, foreground"], ["mean_iou_fg", "IoU, foreground"], ["pixel_accuracy", "pixel accuracy"], ["rand_error", "Rand error"]];
      for (const [key, label] of pairs) {
        if (typeof scores[key] === "number") {
          const dt = document.createElement("dt"); dt.textContent = label;
          const dd = document.createElement("dd"); dd.textContent = scores[key].toFixed(3);
          sdl.append(dt, dd);
        }
      }
      box.append(sdl);
      if (Array.isArray(scores.per_class) && scores.per_class.length) {
        const table = document.createElement("table");
        table.innerHTML = '<thead><tr><th>class</th><th class="num">Dice</th><th class="num">IoU</th><th class="num">precision</th><th class="num">recall</th></tr></thead>';
        const tbody = document.createElement("tbody");
        for (const c of scores.per_class) {
          const tr = document.createElement("tr");
          const cells = [c.name, c.dice, c.iou, c.precision, c.recall];
          cells.forEach((v, i) => {
            const td = document.createElement("td"); if (i) td.className = "num";
            td.textContent = i ? (typeof v === "number" ? v.toFixed(3) : "–") : String(v);
            tr.append(td);
          });
          tbody.append(tr);
        }
        table.append(tbody); box.append(table);
      }
    } else {
      const p = document.createElement("p"); p.className = "muted small"; p.textContent = "No validation scores were saved with this model.";
      box.append(p);
    }
    if (card.plan && typeof card.plan === "object") {
      const h = document.createElement("h3"); h.textContent = "Recipe (from the planner)"; box.append(h);
      const pdl = document.createElement("dl");
      for (const [key, value] of Object.entries(card.plan)) {
        const dt = document.createElement("dt"); dt.textContent = key.replace(/_/g, " ");
        const dd = document.createElement("dd"); dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
        pdl.append(dt, dd);
      }
      box.append(pdl);
    }
    legend();
  }

  // --- small things --------------------------------------------------------------------------
  function checked(response) {
    if (!response.ok) return response.json().then((e) => { throw new Error(e.error || response.statusText); });
    return response.json();
  }
  function errorText(xhr) {
    try { return JSON.parse(xhr.responseText).error || ("The server answered " + xhr.status + "."); }
    catch (e) { return "The server answered " + xhr.status + " " + xhr.statusText + "."; }
  }
  function banner(text) {
    const box = $("banner"); box.textContent = text; box.hidden = false;
    clearTimeout(banner.timer); banner.timer = setTimeout(() => { box.hidden = true; }, 12000);
  }
  function lut(stops) {
    const out = [];
    for (let v = 0; v < 256; v++) {
      const t = v / 255 * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
      out.push([0, 1, 2].map((k) => Math.round(stops[i][k] * (1 - f) + stops[i + 1][k] * f)));
    }
    return out;
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  function fmtNumber(v) { return v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toPrecision(3); }
  function pct(f, digits) { return (f * 100).toFixed(digits === undefined ? 0 : digits) + "%"; }
  function seconds(s) { return s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(1) + " s"; }
  function short(v) { return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(3)) : String(v); }
  function escapeHtml(text) { const d = document.createElement("div"); d.textContent = text; return d.innerHTML; }
})();
"""

__all__ = ["INDEX_HTML", "SCRIPT_JS", "STYLE_CSS"]
