/* Herald console: a new mailing, with the template's live preview.
 * console.js (loaded first) has the helpers, the API calls and the routing. */
"use strict";

// -- a new mailing, with the template's live preview ---------------------------------------

const form = {
  resources: [], databases: [], segments: [], active: null, timer: 0, seq: 0, ctrl: null,
  profilesFor: null, on: false,
};

function editors() { return [...$("templates").querySelectorAll(".editor")]; }
function multivariate() { return $("kind").value === "multivariate"; }

function renumber() {
  editors().forEach((ed, i) => {
    const n = i + 1;
    ed.dataset.variant = String(n);
    const area = ed.querySelector("textarea");
    if (n > 1) area.id = "template-" + n;
    const label = ed.querySelector("label");
    label.htmlFor = area.id;
    label.textContent = multivariate() ? "Variant " + n : "Template";
    const rm = ed.querySelector("button.remove");
    if (rm) rm.textContent = "Remove variant " + n;
  });
  const count = editors().length;
  $("add-variant").disabled = count >= 8;
}

function addVariant(text) {
  if (editors().length >= 8) return null;
  const area = el("textarea", {rows: 6, spellcheck: false, value: text || ""});
  area.setAttribute("aria-describedby", "preview-error");
  const label = el("label", {className: "variant-label"});
  const rm = el("button", {type: "button", className: "remove"});
  const ed = el("div", {className: "editor"}, el("div", {className: "variant-head"}, label, rm),
                area);
  rm.addEventListener("click", () => {
    const was = form.active === area;
    ed.remove();
    renumber();
    if (was) { form.active = $("template"); schedulePreview(); }
    $("add-variant").focus();
  });
  $("add-variant").parentElement.before(ed);
  renumber();
  return area;
}

function onKind() {
  const kind = $("kind").value, multi = kind === "multivariate";
  $("multivariate").hidden = !multi;
  $("add-variant").hidden = $("variant-help").hidden = !multi;
  $("templates").querySelector("legend").textContent = multi ? "Templates (variants)" : "Template";
  for (const ed of editors().slice(1)) ed.hidden = !multi;
  if (multi && editors().length < 2) addVariant("");
  if (!multi && form.active !== $("template")) { form.active = $("template"); schedulePreview(); }
  renumber();
  $("schedule-set").hidden = kind === "trigger";
  if (kind === "regular" && $("schedule").value !== "cron") { $("schedule").value = "cron"; onSchedule(); }
}

function onSchedule() {
  const s = $("schedule").value;
  $("at-field").hidden = s !== "at";
  $("cron-field").hidden = s !== "cron";
  $("timezone-field").hidden = s === "now";
  if (s !== "now" && !$("timezones").children.length && Intl.supportedValuesOf) {
    $("timezones").replaceChildren(...Intl.supportedValuesOf("timeZone").map((z) =>
      el("option", {value: z})));
  }
}

function audienceDatabase() {
  const seg = form.segments.find((s) => s.name === $("segment").value);
  return seg ? seg.database : $("database").value;
}

function fillSelect(select, items, first) {
  const keep = select.value;
  select.replaceChildren(...(first ? [el("option", {value: "", textContent: first})] : []),
    ...items.map(([value, text]) => el("option", {value, textContent: text})));
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

function fillSegments() {
  const db = $("database").value;
  fillSelect($("segment"), form.segments.filter((s) => !db || s.database === db)
    .map((s) => [s.name, s.name + " (" + s.database + ", " + s.kind + ")"]),
    "no segment: the whole database");
}

async function loadProfiles() {
  const db = audienceDatabase();
  if (db === form.profilesFor) return;
  form.profilesFor = db;
  fillSelect($("profile"), [], "none (empty data)");  // another database's ids: no more
  if (!db) return;
  try {
    const answer = await api("GET", "/databases/" + encodeURIComponent(db) +
                             "/profiles?limit=20&after=0");
    if (form.profilesFor !== db) return;
    fillSelect($("profile"), answer.profiles.map((p) =>
      [String(p.id), "#" + p.id + " " + [p.phone, p.email].filter(Boolean).join(" ")]),
      "none (empty data)");
    schedulePreview();
  } catch (err) { report(err); }
}

function schedulePreview() {
  if (!form.on) return;
  clearTimeout(form.timer);
  form.timer = setTimeout(() => preview().catch(report), 200);
}

function clearPreview() {
  setText($("preview-encoding"), "—");
  setText($("preview-length"), "0");
  setText($("preview-segments"), "0");
  $("preview-too-long").hidden = true;
  $("preview-text").replaceChildren();
}

function showError(message, line, col) {
  const box = $("preview-error");
  box.hidden = false;
  const which = editors().length > 1 && multivariate()
    ? " (variant " + form.active.closest(".editor").dataset.variant + ")" : "";
  if (line) {
    box.dataset.line = String(line);
    box.dataset.col = String(col || 1);
    box.textContent = "Line " + line + ", column " + (col || 1) + which + ": " + message;
    const text = form.active.value.split(/\r\n|\r|\n/)[line - 1];
    if (text !== undefined) {
      const marker = $("preview-marker");
      marker.hidden = false;
      marker.textContent = line + " | " + text + "\n" + " ".repeat(String(line).length + 3 +
        Math.max(0, (col || 1) - 1)) + "^";
    }
  } else {
    delete box.dataset.line;
    delete box.dataset.col;
    box.textContent = message;
  }
  form.active.setAttribute("aria-invalid", "true");
}

function hideError() {
  const box = $("preview-error");
  box.hidden = true;
  box.textContent = "";
  delete box.dataset.line;
  delete box.dataset.col;
  $("preview-marker").hidden = true;
  for (const ed of editors()) ed.querySelector("textarea").removeAttribute("aria-invalid");
}

/** The rendered text as nodes: UCS-2-forcing characters in mark.ucs2, links in span.link. */
function previewNodes(p) {
  const text = p.text;
  const marks = [];
  for (const u of p.ucs2_chars || []) {
    if (u.index >= 0 && u.index < text.length) {
      marks.push({start: u.index, end: u.index + (u.char || text[u.index]).length, ucs2: u});
    }
  }
  let from = 0;
  for (const link of p.links || []) {
    const i = text.indexOf(link.short, from);
    if (i < 0) continue;
    marks.push({start: i, end: i + link.short.length, link});
    from = i + link.short.length;
  }
  marks.sort((a, b) => a.start - b.start);
  const out = [];
  let pos = 0;
  for (const mk of marks) {
    if (mk.start < pos) continue;  // overlapping: the first wins
    if (mk.start > pos) out.push(document.createTextNode(text.slice(pos, mk.start)));
    const part = text.slice(mk.start, mk.end);
    if (mk.link) {
      out.push(el("span", {className: "link", textContent: part,
                           title: "shortened link to " + mk.link.url}));
    } else {
      out.push(el("mark", {className: "ucs2", textContent: part,
                           title: "forces UCS-2: U+" + part.codePointAt(0).toString(16)
                             .toUpperCase().padStart(4, "0")}));
    }
    pos = mk.end;
  }
  if (pos < text.length) out.push(document.createTextNode(text.slice(pos)));
  return out;
}

async function preview() {
  const area = form.active || $("template");
  const which = multivariate() && editors().length > 1
    ? "(variant " + area.closest(".editor").dataset.variant + ")" : "";
  setText($("preview-which"), which);
  if (!area.value.trim()) { hideError(); clearPreview(); return; }
  const body = {template: area.value};
  if ($("resource").value) body.resource = $("resource").value;
  const db = audienceDatabase();
  if (db) body.database = db;
  if ($("profile").value) body.profile_id = Number($("profile").value);
  if (form.ctrl) form.ctrl.abort();
  form.ctrl = new AbortController();
  const seq = ++form.seq;
  let p;
  try {
    p = await api("POST", "/templates/preview", body, form.ctrl.signal);
  } catch (err) {
    if (err.name === "AbortError" || err.status === 401 || seq !== form.seq) return;
    clearPreview();
    showError(err.message);
    return;
  }
  if (seq !== form.seq) return;
  if (!p.ok) {
    clearPreview();
    showError(p.error.message, p.error.line, p.error.col);
    return;
  }
  hideError();
  setText($("preview-encoding"), p.encoding === "ucs2" ? "UCS-2" : "GSM-7");
  setText($("preview-length"), num(p.length));
  setText($("preview-segments"), num(p.segments));
  $("preview-too-long").hidden = !p.too_long;
  $("preview-text").replaceChildren(...previewNodes(p));
}

function fieldError(id, message) {
  const node = $(id);
  $("form-error").textContent = message;
  if (node) {
    node.setAttribute("aria-invalid", "true");
    node.focus();
  }
}

function formBody() {
  const kind = $("kind").value;
  const body = {name: $("name").value.trim(), kind, resource: $("resource").value};
  if (!body.name) return fieldError("name", "Give the mailing a name.");
  if (!body.resource) return fieldError("resource", "Choose a resource.");
  if ($("segment").value) body.segment = $("segment").value;
  else if ($("database").value) body.database = $("database").value;
  else return fieldError("database", "Choose an audience: a database or a segment.");
  if (kind === "multivariate") {
    body.templates = editors().map((ed) => ed.querySelector("textarea").value);
    const empty = editors().find((ed) => !ed.querySelector("textarea").value.trim());
    if (body.templates.length < 2) return fieldError("add-variant", "Add a second variant.");
    if (empty) {
      return fieldError(empty.querySelector("textarea").id,
                        "Variant " + empty.dataset.variant + " is empty.");
    }
    body.test_share = Number($("test-share").value);
    if (!(body.test_share > 0 && body.test_share <= 100)) {
      return fieldError("test-share", "The test share is a percent: over 0, at most 100.");
    }
    if (body.test_share < 100) {  // 100 is a plain split: no winner
      body.winner = $("winner").value;
      body.wait = Math.round(Number($("wait").value || 0) * 60);
    }
  } else {
    body.template = $("template").value;
    if (!body.template.trim()) return fieldError("template", "Write the template.");
  }
  if (kind !== "trigger") {
    const s = $("schedule").value;
    if (s === "at") {
      if (!$("at").value) return fieldError("at", "Choose the time to send it.");
      body.at = $("at").value;
    } else if (s === "cron") {
      if (!$("cron").value.trim()) return fieldError("cron", "Write the cron schedule.");
      body.schedule = $("cron").value.trim();
    }
    if (s !== "now" && $("timezone").value.trim()) body.timezone = $("timezone").value.trim();
  }
  return body;
}

const newForm = document.getElementById("new-mailing");

const FIELD_IDS = {name: "name", kind: "kind", resource: "resource", database: "database",
                   segment: "segment", template: "template", templates: "template", at: "at",
                   schedule: "cron", timezone: "timezone", test_share: "test-share",
                   winner: "winner", wait: "wait"};

newForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!canSend()) return;
  for (const n of newForm.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
  $("form-error").textContent = "";
  const body = formBody();
  if (!body) return;
  $("create").disabled = true;
  try {
    const m = await api("POST", "/mailings", body);
    $("name").value = "";
    for (const ed of editors().slice(1)) ed.remove();
    $("template").value = "";
    renumber();
    hideError();
    clearPreview();
    location.hash = "#/mailings/" + m.id;
    say("Mailing #" + m.id + " created.");
  } catch (err) {
    if (err.status === 401) return;
    const field = err.field ? FIELD_IDS[err.field.split(/[.[]/)[0]] : null;
    fieldError(field, (err.field ? err.field + ": " : "") + err.message);
  } finally {
    $("create").disabled = false;
  }
});

$("kind").addEventListener("change", onKind);
$("test-share").addEventListener("input", () => {
  const split = Number($("test-share").value) === 100;
  $("winner").disabled = $("wait").disabled = split;
});
$("schedule").addEventListener("change", onSchedule);
$("add-variant").addEventListener("click", () => {
  const area = addVariant("");
  if (area) { area.hidden = false; area.focus(); }
});
$("templates").addEventListener("input", (ev) => {
  if (ev.target.tagName === "TEXTAREA") { form.active = ev.target; schedulePreview(); }
});
$("templates").addEventListener("focusin", (ev) => {
  if (ev.target.tagName === "TEXTAREA" && form.active !== ev.target) {
    form.active = ev.target;
    schedulePreview();
  }
});
$("database").addEventListener("change", () => { fillSegments(); loadProfiles(); schedulePreview(); });
$("segment").addEventListener("change", () => { loadProfiles(); schedulePreview(); });
for (const id of ["resource", "profile"]) $(id).addEventListener("change", schedulePreview);

function newView() {
  show("view-new", "New mailing");
  form.on = true;
  form.active = form.active && form.active.isConnected ? form.active : $("template");
  $("new-readonly").hidden = canSend();
  if (!$("timezone").value) {
    $("timezone").value = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  }
  onKind();
  onSchedule();
  const ctrl = new AbortController();
  const get = (path) => api("GET", path, undefined, ctrl.signal);
  Promise.allSettled([get("/resources"), get("/databases"), get("/segments")]).then((parts) => {
    if (ctrl.signal.aborted) return;
    const [res, dbs, segs] = parts;
    for (const p of parts) if (p.status === "rejected") report(p.reason);
    form.resources = res.status === "fulfilled" ? res.value.resources : [];
    form.databases = dbs.status === "fulfilled" ? dbs.value.databases : [];
    form.segments = segs.status === "fulfilled" ? segs.value.segments : [];
    fillSelect($("resource"), form.resources.map((r) =>
      [r.name, r.name + " (" + r.channel + ", " + r.virtual_sender + ")"]),
      form.resources.length === 1 ? null : "choose a resource");
    fillSelect($("database"), form.databases.map((d) =>
      [d.name, d.name + " (" + num(d.profiles) + " profiles)"]),
      form.databases.length === 1 ? null : "choose a database");
    fillSegments();
    form.profilesFor = null;
    loadProfiles();
    schedulePreview();
  }).catch(report);
  return () => {
    form.on = false;
    ctrl.abort();
    clearTimeout(form.timer);
    if (form.ctrl) form.ctrl.abort();
  };
}
