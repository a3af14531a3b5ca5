"""The gallery's web page at ``/gallery``, and the thumbnails it shows.

``GET /gallery`` serves one self-contained page (HTML, CSS and vanilla JS, no external
resources) without a token; the page asks for an API token once, keeps it in
``sessionStorage`` and sends it as ``Authorization: Bearer`` on every call to
``/api/v1/gallery``. ``GET /api/v1/gallery/images/{id}/thumbnail`` (viewer) answers the
image's thumbnail (at most 256×256, PNG or JPEG), which the page fetches with its token.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Annotated

import anyio.to_thread
from litestar import Response, get
from litestar.params import PathParameter

from engine.api.auth import guarded
from engine.api.errors import ApiError
from engine.api.gallery import gallery_of
from engine.api.state import MAX_ID, Req
from engine.errors import NotFound
from engine.gallery.images import CONTENT_TYPES, sniff_format

__all__ = ["PAGE", "ROUTES"]

_CSS = """
:root { font: 15px/1.4 system-ui, sans-serif; color: #1d2329; background: #f6f7f9; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem; }
h1 { font-size: 1.3rem; margin: 0 0 .75rem; }
h2 { font-size: 1rem; margin: 1rem 0 .5rem; }
button, input, select, textarea { font: inherit; }
button { cursor: pointer; border: 1px solid #b9c0c8; border-radius: 4px; background: #fff;
  padding: .2rem .6rem; }
button:hover { background: #eef1f4; }
.bar { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center;
  margin: .5rem 0; }
.crumbs button { border: none; background: none; color: #0b5cad; padding: 0; }
.crumbs span + span::before { content: " / "; color: #888; }
#drop { border: 2px dashed #9aa5b1; border-radius: 6px; padding: .75rem; text-align: center;
  background: #fff; }
#drop.over { border-color: #0b5cad; background: #e8f1fb; }
#upload-status { list-style: none; padding: 0; margin: .25rem 0; }
#upload-status .ok { color: #17692c; }
#upload-status .refused { color: #a3231b; }
#message { min-height: 1.4em; color: #a3231b; }
.dirs { display: flex; flex-wrap: wrap; gap: .5rem; padding: 0; list-style: none; }
.dirs li { background: #fff; border: 1px solid #d5dae0; border-radius: 6px; padding: .4rem .6rem; }
.dirs .open { font-weight: 600; border: none; background: none; padding: 0 .3rem 0 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(12rem, 1fr));
  gap: .75rem; padding: 0; list-style: none; }
.grid li { background: #fff; border: 1px solid #d5dae0; border-radius: 6px; padding: .5rem;
  display: flex; flex-direction: column; gap: .3rem; }
.grid li.selected { outline: 2px solid #0b5cad; }
.thumb { height: 9rem; display: flex; align-items: center; justify-content: center;
  background: repeating-conic-gradient(#eee 0 25%, #fff 0 50%) 0 0 / 16px 16px; }
.thumb img { max-width: 100%; max-height: 9rem; }
.name { font-weight: 600; overflow-wrap: anywhere; }
.meta { color: #5b6570; font-size: .85rem; }
.actions { display: flex; flex-wrap: wrap; gap: .25rem; }
.actions button { font-size: .8rem; padding: .1rem .4rem; }
textarea { width: 100%; min-height: 4rem; box-sizing: border-box; }
[hidden] { display: none !important; }
"""

_BODY = """
<h1>Herald gallery</h1>
<form id="login" hidden>
  <label for="token">API token</label>
  <input id="token" type="password" autocomplete="off" required placeholder="hrld_...">
  <button type="submit">Open the gallery</button>
</form>
<main id="app" hidden>
  <div class="bar">
    <nav class="crumbs" id="crumbs" aria-label="Directory path"></nav>
    <button type="button" id="forget">Forget token</button>
  </div>
  <div class="bar" role="search">
    <label>Search <input id="q" type="search" placeholder="name or tag"></label>
    <label>Sort <select id="sort">
      <option value="date">date</option><option value="name">name</option>
      <option value="size">size</option></select></label>
    <label>Order <select id="order">
      <option value="desc">descending</option><option value="asc">ascending</option>
    </select></label>
    <label><input id="recent" type="checkbox"> Recent (30 days)</label>
  </div>
  <div class="bar">
    <form id="mkdir" class="bar">
      <label>New directory <input id="dirname" required maxlength="244"></label>
      <button type="submit">Create</button>
    </form>
  </div>
  <div id="drop">
    <label>Drop images here or choose files
      <input id="files" type="file" multiple accept="image/png,image/jpeg,image/gif"></label>
    <ul id="upload-status" aria-live="polite"></ul>
  </div>
  <p id="message" role="status"></p>
  <h2 id="dirs-title">Directories</h2>
  <ul class="dirs" id="dirs" aria-labelledby="dirs-title"></ul>
  <h2>Images</h2>
  <div class="bar" id="selection">
    <label><input id="select-all" type="checkbox"> Select all</label>
    <span id="count">0 selected</span>
    <label>Move to <select id="target"></select></label>
    <button type="button" id="move">Move</button>
    <button type="button" id="download">Download zip</button>
    <button type="button" id="delete">Delete</button>
  </div>
  <ul class="grid" id="images" aria-label="Images"></ul>
  <p id="empty" hidden>No images here.</p>
  <h2><label for="snippet">Template snippet</label></h2>
  <textarea id="snippet" placeholder="Inserted links and images go here"></textarea>
</main>
"""

_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const API = "/api/v1/gallery";
const state = {dir: null, path: [], images: [], dirs: [], selected: new Set(), tree: null};
const thumbs = new Map();

function token() { return sessionStorage.getItem("herald-token"); }

async function api(method, path, body) {
  const headers = {"Authorization": "Bearer " + token()};
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(API + path, {method, headers, body: payload});
  if (r.status === 401) {
    logout("The token was refused: enter it again.");
    throw new Error("401");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function say(text) { $("message").textContent = text || ""; }

async function guarded(action) {
  try { say(""); await action(); } catch (e) { if (e.message !== "401") say(e.message); }
}

function logout(text) {
  sessionStorage.removeItem("herald-token");
  for (const url of thumbs.values()) URL.revokeObjectURL(url);
  thumbs.clear();
  $("app").hidden = true;
  $("login").hidden = false;
  $("token").focus();
  say(text);
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c);
  return node;
}

function button(text, label, onclick) {
  return el("button", {type: "button", textContent: text, onclick,
                       ariaLabel: label || text, title: label || text});
}

function human(bytes) {
  return bytes < 1024 ? bytes + " B" : bytes < 1048576 ? (bytes / 1024).toFixed(1) + " KB"
    : (bytes / 1048576).toFixed(1) + " MB";
}

async function refresh() {
  const p = new URLSearchParams({sort: $("sort").value, order: $("order").value});
  const q = $("q").value.trim();
  if (q) p.set("q", q);
  else if (state.dir !== null) p.set("directory_id", state.dir);
  if ($("recent").checked) p.set("recent", "true");
  const data = await (await api("GET", "/images?" + p)).json();
  state.images = data.images;
  state.dirs = data.directories;
  const ids = new Set(state.images.map((i) => i.id));
  for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
  render(q);
}

function render(q) {
  const crumbs = $("crumbs");
  crumbs.replaceChildren();
  const levels = [{id: null, name: "Root"}, ...state.path];
  levels.forEach((d, i) => {
    const last = i === levels.length - 1 && !q;
    crumbs.append(el("span", {}, last ? d.name : button(d.name, "Open " + d.name, () => {
      state.path = state.path.slice(0, i); state.dir = d.id; $("q").value = "";
      guarded(refresh);
    })));
  });
  if (q) crumbs.append(el("span", {textContent: "Search: " + q}));

  const dirs = $("dirs");
  dirs.replaceChildren();
  if (state.dir !== null && !q) {
    dirs.append(el("li", {}, button("..", "Up one directory", () => {
      state.path.pop(); state.dir = state.path.length ? state.path.at(-1).id : null;
      guarded(refresh);
    })));
  }
  for (const d of state.dirs) {
    dirs.append(el("li", {},
      Object.assign(button("📁 " + d.name, "Open directory " + d.name, () => openDir(d)),
                    {className: "open"}),
      button("Rename", "Rename directory " + d.name, () => guarded(async () => {
        const name = prompt("New name of the directory", d.name);
        if (!name || name === d.name) return;
        await api("PATCH", "/directories/" + d.id, {name});
        state.tree = null; await refresh();
      })),
      button("Delete", "Delete directory " + d.name, () => guarded(async () => {
        if (!confirm("Delete the directory " + d.name + " and everything in it?")) return;
        await api("DELETE", "/directories/" + d.id);
        state.tree = null; await refresh();
      }))));
  }

  dirs.hidden = $("dirs-title").hidden = dirs.children.length === 0;

  const grid = $("images");
  grid.replaceChildren();
  for (const img of state.images) grid.append(card(img));
  $("empty").hidden = state.images.length > 0;
  updateSelection();
  loadTree();
}

function openDir(d) {
  if ($("q").value.trim()) { state.path = []; $("q").value = ""; }
  state.path.push({id: d.id, name: d.name});
  state.dir = d.id;
  guarded(refresh);
}

function card(img) {
  const box = el("input", {type: "checkbox", checked: state.selected.has(img.id),
                           ariaLabel: "Select " + img.name});
  const li = el("li", {className: state.selected.has(img.id) ? "selected" : ""});
  li.dataset.id = img.id;
  box.onchange = () => {
    if (box.checked) state.selected.add(img.id); else state.selected.delete(img.id);
    li.className = box.checked ? "selected" : "";
    updateSelection();
  };
  const pic = el("img", {alt: img.name});
  showThumb(img.id, pic);
  li.append(
    el("div", {className: "thumb"}, pic),
    el("label", {className: "name"}, box, " ", img.name),
    el("span", {className: "meta",
                textContent: img.width + "×" + img.height + " · " + human(img.size) +
                             (img.tags.length ? " · " + img.tags.join(", ") : "")}),
    el("div", {className: "actions"},
      button("Copy URL", "Copy the URL of " + img.name, () => copy(img.url)),
      button("Insert link", "Insert a link to " + img.name, () => insert(img.url)),
      button("Insert <img>", "Insert an img tag of " + img.name, () => insert(img.html)),
      button("Rename", "Rename " + img.name, () => guarded(async () => {
        const name = prompt("New name of the image (its URL stays the same)", img.name);
        if (!name || name === img.name) return;
        await api("PATCH", "/images/" + img.id, {name});
        await refresh();
      }))));
  return li;
}

async function showThumb(id, pic) {
  try {
    if (!thumbs.has(id)) {
      const blob = await (await api("GET", "/images/" + id + "/thumbnail")).blob();
      thumbs.set(id, URL.createObjectURL(blob));
    }
    pic.src = thumbs.get(id);
  } catch (e) { /* the alt text stays */ }
}

async function copy(text) {
  try { await navigator.clipboard.writeText(text); say("Copied " + text); }
  catch (e) { insert(text); say("Could not use the clipboard: inserted into the snippet."); }
}

function insert(text) {
  const t = $("snippet");
  const start = t.selectionStart, end = t.selectionEnd;
  t.value = t.value.slice(0, start) + text + t.value.slice(end);
  t.selectionStart = t.selectionEnd = start + text.length;
  t.focus();
}

function updateSelection() {
  const n = state.selected.size;
  $("count").textContent = n + " selected";
  $("select-all").checked = n > 0 && n === state.images.length;
  $("select-all").indeterminate = n > 0 && n < state.images.length;
  for (const id of ["move", "download", "delete", "target"]) $(id).disabled = n === 0;
}

async function loadTree() {
  if (state.tree) return;
  const tree = [{id: null, label: "/ (root)"}];
  const walk = async (id, prefix) => {
    const p = id === null ? "" : "?directory_id=" + id;
    const data = await (await api("GET", "/images" + p)).json();
    for (const d of data.directories) {
      tree.push({id: d.id, label: prefix + "/" + d.name});
      if (tree.length < 500) await walk(d.id, prefix + "/" + d.name);
    }
  };
  try { await walk(null, ""); } catch (e) { return; }
  state.tree = tree;
  $("target").replaceChildren(...tree.map((t) =>
    el("option", {value: t.id === null ? "" : t.id, textContent: t.label})));
}

async function upload(files) {
  if (!files.length) return;
  const status = $("upload-status");
  status.replaceChildren();
  const form = new FormData();
  if (state.dir !== null) form.append("directory_id", state.dir);
  for (const f of files) form.append("file", f, f.name);
  try {
    const answer = await (await api("POST", "/images", form)).json();
    for (const i of answer.uploaded) {
      status.append(el("li", {className: "ok", textContent: i.name + ": uploaded"}));
    }
    for (const r of answer.rejected) {
      status.append(el("li", {className: "refused",
                              textContent: r.name + ": refused: " + r.error}));
    }
  } catch (e) {
    if (e.message === "401") return;
    for (const f of files) {
      status.append(el("li", {className: "refused",
                              textContent: f.name + ": refused: " + e.message}));
    }
  }
  await guarded(refresh);
}

async function eachSelected(verb, action) {
  const ids = [...state.selected];
  let done = 0, error = "";
  try {
    for (const id of ids) { await action(id); state.selected.delete(id); done++; }
  } catch (e) {
    if (e.message === "401") return;
    error = e.message + " (" + done + " of " + ids.length + " done)";
  }
  await guarded(refresh);
  say(error || verb + " " + done + " image(s).");
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  guarded(refresh);
}

$("login").onsubmit = (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("herald-token", $("token").value.trim());
  $("token").value = "";
  start();
};
$("forget").onclick = () => logout("");
let timer = null;
$("q").oninput = () => { clearTimeout(timer); timer = setTimeout(() => guarded(refresh), 250); };
$("sort").onchange = () => {
  $("order").value = $("sort").value === "name" ? "asc" : "desc";
  guarded(refresh);
};
$("order").onchange = $("recent").onchange = () => guarded(refresh);
$("mkdir").onsubmit = (ev) => {
  ev.preventDefault();
  guarded(async () => {
    await api("POST", "/directories", {name: $("dirname").value, parent_id: state.dir});
    $("dirname").value = "";
    state.tree = null;
    await refresh();
  });
};
$("files").onchange = () => { const f = [...$("files").files]; $("files").value = ""; upload(f); };
const drop = $("drop");
drop.ondragover = (ev) => { ev.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (ev) => {
  ev.preventDefault(); drop.classList.remove("over");
  upload([...ev.dataTransfer.files]);
};
$("select-all").onchange = () => {
  state.selected = new Set($("select-all").checked ? state.images.map((i) => i.id) : []);
  for (const li of $("images").children) {
    const on = state.selected.has(Number(li.dataset.id));
    li.className = on ? "selected" : "";
    li.querySelector("input[type=checkbox]").checked = on;
  }
  updateSelection();
};
$("move").onclick = () => {
  const v = $("target").value;
  const directory_id = v === "" ? null : Number(v);
  eachSelected("Moved", (id) => api("PATCH", "/images/" + id, {directory_id}));
};
$("delete").onclick = () => {
  const n = state.selected.size;
  if (!confirm("Delete " + n + " image(s)? Their URLs stop working.")) return;
  eachSelected("Deleted", (id) => api("DELETE", "/images/" + id));
};
$("download").onclick = () => guarded(async () => {
  const blob = await (await api("POST", "/download", {ids: [...state.selected]})).blob();
  const a = el("a", {href: URL.createObjectURL(blob), download: "images.zip"});
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
});

if (token()) start(); else logout("");
"""


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


PAGE = (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" href="data:,">\n<title>Herald gallery</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>{_BODY}"
        f"<script>{_JS}</script>\n</body>\n</html>\n")

_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src '{_sha256(_JS)}'; style-src '{_sha256(_CSS)}';"
        " img-src 'self' blob: data:; connect-src 'self'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@get(["/gallery", "/gallery/"], include_in_schema=False, media_type="text/html")
async def gallery_page() -> Response[str]:
    """The page; it needs no token (it asks for one)."""
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=_HEADERS)


ThumbId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the image's id")]


@get("/api/v1/gallery/images/{image_id:int}/thumbnail", **guarded("viewer", 400, 404),
     include_in_schema=False, media_type="application/octet-stream")
async def thumbnail(request: Req, image_id: ThumbId) -> Response[bytes]:
    """The image's thumbnail (PNG or JPEG, at most 256×256)."""
    gallery = gallery_of(request)
    try:
        image = await gallery.image(image_id)
        data = await anyio.to_thread.run_sync(gallery.blobs.get, image.thumb_sha256)
    except (NotFound, KeyError):
        raise ApiError(404, f"no image {image_id}") from None
    fmt = sniff_format(data) or "png"
    return Response(data, media_type=CONTENT_TYPES[fmt],
                    headers={"Cache-Control": "private, max-age=86400",
                             "X-Content-Type-Options": "nosniff"})


ROUTES = [gallery_page, thumbnail]
