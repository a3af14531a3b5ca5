/* Herald console: the senders, live (this process's figures).
 * console.js (loaded first) has the helpers, the API calls and the routing. */
"use strict";

// -- senders --------------------------------------------------------------------------------

const TEXT_FIELDS = new Set(["gateway", "caller_id", "weight", "health"]);

function sendersView() {
  show("view-senders", "Senders");
  const ctrl = new AbortController();
  const body = $("senders").tBodies[0];
  const rows = new Map();
  let latest = null, frame = 0;

  function weightText(w) {
    const parts = Object.entries(w || {}).map(([vs, p]) => vs + " " + rateNf.format(p) + "%");
    return parts.join(", ") || "—";
  }

  function render(list) {
    const seen = new Set();
    const order = [];
    for (const s of list) {
      seen.add(s.name);
      let r = rows.get(s.name);
      if (!r) {
        r = {tr: el("tr", {dataset: {sender: s.name}}), cells: {}, errors: ""};
        r.tr.append(el("th", {scope: "row", textContent: s.name}));
        for (const k of ["gateway", "caller_id", "rate", "burst", "window", "weight", "health",
                         "sent", "failed", "throttled", "in_flight", "last_errors"]) {
          const cls = k === "last_errors" ? "wrap" : TEXT_FIELDS.has(k) ? "" : "num";
          r.cells[k] = el("td", {className: cls, dataset: {field: k}});
          r.tr.append(r.cells[k]);
        }
        rows.set(s.name, r);
      }
      const c = r.cells;
      setText(c.gateway, s.gateway || "—");
      setText(c.caller_id, s.caller_id || s.from || "—");  // an email sender: its From
      setText(c.rate, s.rate ? rateNf.format(s.rate) : "unlimited");
      setText(c.burst, s.burst === null || s.burst === undefined ? "—" : num(s.burst));
      setText(c.window, s.window ? num(s.window) : "—");
      setText(c.weight, weightText(s.weight));
      setText(c.health, s.health || "—");
      const cls = "health-" + (s.health || "ok");
      if (c.health.className !== cls) c.health.className = cls;
      setText(c.sent, num(s.sent));
      setText(c.failed, num(s.failed));
      setText(c.throttled, num(s.throttled));
      setText(c.in_flight, num(s.in_flight));
      const errs = (s.last_errors || []).slice(-3).reverse();
      const key = JSON.stringify(errs);
      if (key !== r.errors) {
        r.errors = key;
        c.last_errors.replaceChildren(...(errs.length ? errs.map((e) => el("div", {
          textContent: (e.at ? clockFmt.format(new Date(e.at * 1000)) + " " : "") + e.error,
        })) : ["none"]));
      }
      order.push(r.tr);
    }
    for (const name of [...rows.keys()]) if (!seen.has(name)) rows.delete(name);
    const now = body.children;
    if (!(now.length === order.length && order.every((tr, i) => now[i] === tr))) {
      body.replaceChildren(...order);
    }
  }

  function paint() {
    frame = 0;
    if (latest) { render(latest.senders || []); latest = null; }
  }

  function onMessage(d) {
    latest = d;
    setText($("senders-at"), "Updated " + clockFmt.format(new Date()) + ".");
    if (!frame) frame = requestAnimationFrame(paint);
  }

  function onState(what, seconds) {
    if (what === "retry") setText($("senders-at"), "Connection lost; retrying in " + seconds + " s.");
  }

  body.replaceChildren();
  api("GET", "/senders", undefined, ctrl.signal).then((d) => {
    if (!latest) onMessage(d);
  }, report);
  sse("/senders/live", "senders", onMessage, ctrl.signal, onState);
  return () => {
    ctrl.abort();
    if (frame) cancelAnimationFrame(frame);
  };
}
