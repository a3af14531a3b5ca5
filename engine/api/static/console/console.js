/* Herald console: a single page over the JSON API (/api/v1), hash routing, no framework.
 *
 * The token is asked once and kept in sessionStorage ("herald.token"); every call sends
 * it as a bearer token, and whoami's role decides which action buttons show (the API
 * refuses a viewer's actions anyway). Live figures come from server-sent events read
 * with fetch() (EventSource cannot send the Authorization header); DOM updates are
 * coalesced to one animation frame per message, and nothing is built per recipient.
 * Data reaches the page through textContent only, never as HTML.
 *
 * Files (classic scripts, deferred, in this order, sharing their top-level names):
 * charts.js (SVG charts), console.js (this: helpers, API, live streams, the confirm
 * dialog, login and routing), mailings.js, mailing.js, editor.js, senders.js (a view each).
 */
"use strict";

const $ = (id) => document.getElementById(id);
const API = "/api/v1";
const TOKEN_KEY = "herald.token";
const ROLE_RANK = {viewer: 0, sender: 1, admin: 2};
const nf = new Intl.NumberFormat("en-US");
const rateNf = new Intl.NumberFormat("en-US", {maximumFractionDigits: 1});
const when = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "short"});
const clockFmt = new Intl.DateTimeFormat(undefined, {timeStyle: "medium"});
const state = {role: null, name: ""};

const canSend = () => (ROLE_RANK[state.role] || 0) >= ROLE_RANK.sender;
const token = () => sessionStorage.getItem(TOKEN_KEY);

// -- small helpers ------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    const {dataset, ...rest} = props;
    Object.assign(node, rest);
    if (dataset) Object.assign(node.dataset, dataset);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

/** Set a node's text only when it differs (no needless mutation, no layout). */
function setText(node, text) {
  const t = String(text);
  if (node.textContent !== t) node.textContent = t;
}

function num(v) { return v === null || v === undefined ? "—" : nf.format(v); }
function percent(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(2) + "%"; }
function at(seconds) { return seconds ? when.format(new Date(seconds * 1000)) : "—"; }

function say(text, bad) {
  const m = $("message");
  m.textContent = text || "";
  m.classList.toggle("bad", Boolean(bad));
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); },
                                        {once: true});
  });
}

async function errorOf(r) {
  let msg = r.status + " " + r.statusText, field = null;
  try {
    const body = await r.json();
    if (body && body.error) { msg = body.error; field = body.field || null; }
  } catch (e) { /* not JSON */ }
  return new HttpError(r.status, msg, field);
}

function headers(extra) {
  return Object.assign({"Authorization": "Bearer " + token()}, extra || {});
}

async function api(method, path, body, signal) {
  const init = {method, headers: headers(), signal, cache: "no-store"};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(API + path, init);
  if (r.status === 401) {
    logout("The token was refused: enter it again.");
    throw new HttpError(401, "unauthorised");
  }
  if (!r.ok) throw await errorOf(r);
  return r.status === 204 ? null : r.json();
}

/** Show an error in the message area, unless it is an abort or a 401 (handled). */
function report(err) {
  if (!err || err.name === "AbortError" || err.status === 401) return;
  say(err.message || String(err), true);
}

// -- server-sent events over fetch() -----------------------------------------------------

/**
 * Read `path` as a stream of server-sent events and call onMessage(json) for each event
 * named `name`, until `signal` aborts. A stream that drops, errs or goes quiet for 20 s
 * is reopened after a backoff (1 s, doubling to 30 s; back to 1 s once a message
 * arrives). onState("live" | "retry", seconds) tells the page.
 */
async function sse(path, name, onMessage, signal, onState) {
  let delay = 1000;
  while (!signal.aborted) {
    const conn = new AbortController();
    const stop = () => conn.abort();
    signal.addEventListener("abort", stop, {once: true});
    let watchdog = 0;
    const arm = () => { clearTimeout(watchdog); watchdog = setTimeout(stop, 20000); };
    try {
      arm();
      const r = await fetch(API + path, {headers: headers({"Accept": "text/event-stream"}),
                                         signal: conn.signal, cache: "no-store"});
      if (r.status === 401) { logout("The token was refused: enter it again."); return; }
      if (!r.ok) throw await errorOf(r);
      onState("live");
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "", event = "", data = [];
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        arm();
        buf += value;
        let hold = "";
        if (buf.endsWith("\r")) { hold = "\r"; buf = buf.slice(0, -1); }  // maybe \r\n
        const lines = buf.split(/\r\n|\r|\n/);
        buf = lines.pop() + hold;
        if (buf.length > 1 << 20) throw new Error("an event over 1 MB");
        for (const line of lines) {
          if (line === "") {
            if (data.length && (event || "message") === name) {
              onMessage(JSON.parse(data.join("\n")));
              delay = 1000;
            }
            event = "";
            data = [];
          } else if (line[0] !== ":") {
            const c = line.indexOf(":");
            const field = c < 0 ? line : line.slice(0, c);
            let v = c < 0 ? "" : line.slice(c + 1);
            if (v[0] === " ") v = v.slice(1);
            if (field === "event") event = v;
            else if (field === "data") data.push(v);
          }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err.status === 404 || err.status === 403) { report(err); onState("gone"); return; }
    } finally {
      clearTimeout(watchdog);
      signal.removeEventListener("abort", stop);
    }
    if (signal.aborted) return;
    const wait = delay + Math.random() * 250;
    onState("retry", Math.round(wait / 1000));
    await sleep(wait, signal);
    delay = Math.min(delay * 2, 30000);
  }
}

// -- the confirm dialog -------------------------------------------------------------------

const dialog = $("confirm-dialog");
let asked = null;
let opener = null;

/** Open the confirm dialog: {title, text, confirm, phone?, variants?, run(values)}.
 *  run's promise closes it; its error shows in it. Escape or "cancel" closes it, and
 *  the focus goes back where it was. */
function ask(opts) {
  opener = document.activeElement;
  asked = opts;
  $("confirm-title").textContent = opts.title;
  $("confirm-text").textContent = opts.text;
  $("confirm-phone-field").hidden = !opts.phone;
  $("confirm-pick-field").hidden = !opts.variants;
  if (opts.variants) {
    $("pick-variant").replaceChildren(...opts.variants.map((v) =>
      el("option", {value: String(v), textContent: "variant " + v})));
    if (opts.variant) $("pick-variant").value = String(opts.variant);
  }
  $("confirm-error").textContent = "";
  const ok = dialog.querySelector("button.confirm");
  ok.textContent = opts.confirm;
  ok.disabled = false;
  ok.classList.toggle("danger", Boolean(opts.danger));
  ok.classList.toggle("primary", !opts.danger);
  dialog.showModal();
  (opts.phone ? $("test-phone") : dialog.querySelector("button.cancel")).focus();
}

dialog.querySelector("button.cancel").addEventListener("click", () => dialog.close());
dialog.addEventListener("keydown", (ev) => {  // Tab cycles inside the dialog
  if (ev.key !== "Tab") return;
  const stops = [...dialog.querySelectorAll("input, select, button")]
    .filter((n) => !n.disabled && !n.closest("[hidden]"));
  if (!stops.length) return;
  const first = stops[0], last = stops[stops.length - 1];
  if (ev.shiftKey && (document.activeElement === first || !dialog.contains(document.activeElement))) {
    ev.preventDefault();
    last.focus();
  } else if (!ev.shiftKey && (document.activeElement === last ||
                              !dialog.contains(document.activeElement))) {
    ev.preventDefault();
    first.focus();
  }
});
dialog.addEventListener("close", () => {
  // the event comes a task after close(): a dialog opened again since is not this one
  if (dialog.open) return;
  asked = null;
  const back = opener;
  opener = null;
  if (back && back.isConnected && !back.hidden && !back.closest("[hidden]")) back.focus();
  else $("main").focus();
});
$("confirm-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!asked) return;
  const values = {};
  if (asked.phone) {
    values.phones = $("test-phone").value.split(/[,;\s]+/).filter(Boolean);
    if (!values.phones.length) {
      $("confirm-error").textContent = "Enter at least one phone number.";
      $("test-phone").focus();
      return;
    }
  }
  if (asked.variants) values.variant = Number($("pick-variant").value);
  const ok = dialog.querySelector("button.confirm");
  ok.disabled = true;
  const opts = asked;
  try {
    const answer = await opts.run(values);
    if (dialog.open) dialog.close();
    if (opts.done) opts.done(answer);
  } catch (err) {
    ok.disabled = false;
    if (err.status === 401) { if (dialog.open) dialog.close(); return; }
    $("confirm-error").textContent = err.message || String(err);
  }
});

// -- mailing actions ----------------------------------------------------------------------

const ACTIONS = ["start", "pause", "resume", "cancel", "test"];
const LABELS = {start: "Start", pause: "Pause", resume: "Resume", cancel: "Cancel",
                test: "Test"};

/** The actions a mailing's state allows (the API has the last word: 409 otherwise). */
function allowed(m) {
  const out = new Set(["test"]);
  if (m.status === "running") { out.add("pause"); out.add("cancel"); }
  else if (m.status === "paused" || m.status === "failed") { out.add("resume"); out.add("cancel"); }
  else if (m.state !== "cancelled" && !(m.kind === "trigger" && m.status === "draft") &&
           !(m.kind === "multivariate" && (m.state === "waiting" || m.state === "done")) &&
           // a broadcast sends once (the API answers 409 to a second start)
           !(m.kind === "broadcast" && (m.launches_total > 0 || m.status === "finished" ||
                                        m.status === "cancelled"))) {
    out.add("start");
  }
  if (m.state === "scheduled" || m.state === "waiting") out.add("cancel");
  return out;
}

function startText(m) {
  const who = "Mailing #" + m.id + " “" + m.name + "”";
  if (m.kind === "multivariate") {
    return who + " starts its test now: each variant goes to its part of the test share" +
      " of the audience, then, after the wait, the winner to the rest.";
  }
  if (m.kind === "regular") {
    return who + " runs once now, over its audience as it is now, besides its schedule.";
  }
  if (m.kind === "trigger") return who + " takes trigger calls again.";
  const instead = m.state === "scheduled"
    ? " now instead of at its scheduled time (it will not launch then)" : " now";
  return who + " starts a run" + instead + ": it sends to its whole audience through" +
    " resource " + m.resource + ". It goes on in the background; you can pause or cancel it.";
}

const ACTION_TEXT = {
  start: (m) => ({title: "Start “" + m.name + "”?", confirm: "Start it now", text: startText(m)}),
  pause: (m) => ({title: "Pause “" + m.name + "”?", confirm: "Pause it",
    text: "Mailing #" + m.id + " stops gracefully: batches already at a gateway finish," +
      " nothing more is sent. Resume carries on from there, nobody lost or sent twice."}),
  resume: (m) => ({title: "Resume “" + m.name + "”?", confirm: "Resume it",
    text: "Mailing #" + m.id + "'s run carries on where it stopped, sending to the" +
      " recipients it has not reached yet (nobody twice)."}),
  cancel: (m) => ({title: "Cancel “" + m.name + "” for good?", confirm: "Cancel the mailing",
    danger: true,
    text: "Mailing #" + m.id + " stops for good: every message not yet handed to a gateway" +
      " is skipped as cancelled, and it never launches again. This cannot be undone."}),
  test: (m) => ({title: "Send a test of “" + m.name + "”", confirm: "Send the test",
    phone: true,
    text: "Every variant of mailing #" + m.id + " is sent now to the phones below, through" +
      " its real routing and rendered for the first profile of its audience. Test messages" +
      " skip dedupe and policies and count in no report."}),
};

function testSummary(answer) {
  const parts = [];
  for (const run of (answer && answer.runs) || []) {
    const which = run.variant ? "variant " + run.variant + ": " : "";
    parts.push(which + run.messages.map((x) =>
      x.phone + " " + x.state + (x.reason ? " (" + x.reason + ")" : "")).join(", "));
  }
  return "Test sent. " + (parts.join("; ") || "No message.");
}

/** Ask, then run an action on mailing m; after() gets the API's answer. */
function act(action, m, after) {
  const text = ACTION_TEXT[action](m);
  ask(Object.assign(text, {
    run: (v) => action === "test"
      ? api("POST", "/mailings/" + m.id + "/test", {to: v.phones})
      : api("POST", "/mailings/" + m.id + "/" + action),
    done: (answer) => {
      say(action === "test" ? testSummary(answer)
        : LABELS[action] + ": mailing #" + m.id + " is now " + answer.status + ".");
      if (after) after(answer);
    },
  }));
}

// -- login and routing --------------------------------------------------------------------

const VIEWS = ["view-login", "view-mailings", "view-mailing", "view-new", "view-senders"];
let leave = null;

function show(id, title) {
  for (const v of VIEWS) $(v).hidden = v !== id;
  document.title = title + " · Herald console";
}

function applyRole() {
  for (const node of document.querySelectorAll("[data-role=sender]")) node.hidden = !canSend();
  $("whoami").textContent = (state.name ? state.name + " · " : "") + state.role;
  $("whoami").hidden = $("logout").hidden = $("nav").hidden = false;
}

function logout(text) {
  if (leave) { leave(); leave = null; }
  if (dialog.open) dialog.close();
  sessionStorage.removeItem(TOKEN_KEY);
  state.role = null;
  $("whoami").hidden = $("logout").hidden = $("nav").hidden = true;
  show("view-login", "Log in");
  $("login-error").textContent = text || "";
  say("");
  $("token").focus();
}

async function login() {
  try {
    const me = await api("GET", "/whoami");
    state.role = me.role;
    state.name = me.name || "";
  } catch (err) {
    if (err.status !== 401) logout(err.message);
    return;
  }
  applyRole();
  if (!location.hash || location.hash === "#logout" || location.hash === "#/") {
    location.replace("#/mailings");  // hashchange routes
  } else {
    route();
  }
}

function route() {
  if (!state.role) return;
  const hash = location.hash;
  if (hash === "#logout") { logout("Logged out."); return; }
  if (leave) { leave(); leave = null; }
  say("");
  let m, page;
  if (hash === "#/mailings" || hash === "" || hash === "#/") {
    page = "mailings"; leave = listView();
  } else if (hash === "#/mailings/new") {
    page = "new"; leave = newView();
  } else if ((m = /^#\/mailings\/(\d+)$/.exec(hash))) {
    page = "mailings"; leave = mailingView(Number(m[1]));
  } else if (hash === "#/senders") {
    page = "senders"; leave = sendersView();
  } else {
    location.replace("#/mailings");
    return;
  }
  for (const a of $("nav").querySelectorAll("a")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const h1 = document.querySelector("section.view:not([hidden]) h1");
  if (h1 && document.activeElement !== $("token")) h1.focus({preventScroll: true});
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (!t) { $("login-error").textContent = "Enter a token."; return; }
  sessionStorage.setItem(TOKEN_KEY, t);
  $("token").value = "";
  $("login-error").textContent = "";
  login();
});
$("logout").addEventListener("click", () => logout("Logged out."));
window.addEventListener("hashchange", route);

// -- progress and schedule, as the list and a mailing's page show them --------------------

function progressOf(m) {
  const done = (m.sent || 0) + (m.failed || 0) + (m.unknown || 0);
  const total = m.total || m.reserved || 0;
  return {done, total};
}

function setProgress(bar, text, m) {
  const {done, total} = progressOf(m);
  if (total > 0) {
    if (bar.max !== total) bar.max = total;
    if (bar.value !== Math.min(done, total)) bar.value = Math.min(done, total);
    setText(text, num(done) + " / " + num(total));
  } else if (m.status === "running") {
    if (bar.hasAttribute("value")) bar.removeAttribute("value");  // indeterminate
    setText(text, "starting…");
  } else {
    bar.max = 1;
    bar.value = 0;
    setText(text, m.status === "draft" ? "not started" : num(done) + " sent");
  }
  bar.setAttribute("aria-valuetext", text.textContent);
}

function scheduleText(m) {
  const next = m.next_launch ? "next " + at(m.next_launch) : "";
  if (m.state === "draft") return next || "on start";
  return next ? m.state + ", " + next : m.state;
}

// -- start ------------------------------------------------------------------------------------

// the other files (loaded after this one, deferred) define the views
document.addEventListener("DOMContentLoaded", () => { if (token()) login(); else logout(""); });
