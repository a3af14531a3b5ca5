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
