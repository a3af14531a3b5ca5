/* Herald console: the list of mailings, polled every 2 s.
 * console.js (loaded first) has the helpers, the API calls and the routing. */
"use strict";

// -- the list of mailings -----------------------------------------------------------------

function listView() {
  show("view-mailings", "Mailings");
  const body = $("mailings").tBodies[0];
  const rows = new Map();
  const ctrl = new AbortController();
  let last = [], timer = 0;

  function makeRow(m) {
    const r = {m};
    r.tr = el("tr", {dataset: {mailingId: String(m.id)}});
    r.link = el("a", {href: "#/mailings/" + m.id});
    r.kind = el("td", {className: "kind"});
    r.badge = el("span", {className: "badge"});
    r.status = el("td", {className: "status"}, r.badge);
    r.schedule = el("td");
    r.bar = el("progress", {max: 1, value: 0});
    r.barText = el("span", {className: "muted"});
    r.tr.append(el("td", {className: "num", textContent: String(m.id)}), el("td", {}, r.link),
                r.kind, r.status, r.schedule, el("td", {}, r.bar, " ", r.barText));
    if (canSend()) {
      r.buttons = {};
      const box = el("div", {className: "row-actions"});
      for (const a of ACTIONS) {
        const b = el("button", {type: "button", textContent: LABELS[a], hidden: true,
                                dataset: {action: a}});
        b.addEventListener("click", () => act(a, r.m, () => refresh()));
        r.buttons[a] = b;
        box.append(b);
      }
      r.tr.append(el("td", {}, box));
    }
    return r;
  }

  function update(r, m) {
    r.m = m;
    setText(r.link, m.name);
    setText(r.kind, m.kind);
    setText(r.badge, m.status);
    if (r.badge.className !== "badge " + m.status) r.badge.className = "badge " + m.status;
    setText(r.schedule, scheduleText(m));
    setProgress(r.bar, r.barText, m);
    r.bar.setAttribute("aria-label", "Progress of " + m.name);
    if (r.buttons) {
      const ok = allowed(m);
      for (const a of ACTIONS) {
        const hide = !ok.has(a);
        if (r.buttons[a].hidden !== hide) r.buttons[a].hidden = hide;
        r.buttons[a].setAttribute("aria-label", LABELS[a] + " " + m.name);
      }
    }
  }

  function render() {
    const status = $("filter-status").value, kind = $("filter-kind").value;
    const seen = new Set();
    const shown = [];
    for (const m of last) {
      seen.add(m.id);
      let r = rows.get(m.id);
      if (!r) { r = makeRow(m); rows.set(m.id, r); }
      update(r, m);
      if ((!status || m.status === status) && (!kind || m.kind === kind)) shown.push(r.tr);
    }
    for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
    const now = body.children;
    const same = now.length === shown.length && shown.every((tr, i) => now[i] === tr);
    if (!same) body.replaceChildren(...shown);
    $("mailings-empty").hidden = shown.length > 0;
    const noun = last.length === 1 ? " mailing" : " mailings";
    setText($("mailings-count"), shown.length === last.length
      ? num(last.length) + noun : num(shown.length) + " of " + num(last.length) + noun);
  }

  async function refresh() {
    try {
      last = (await api("GET", "/mailings", undefined, ctrl.signal)).mailings;
      render();
    } catch (err) { report(err); }
  }

  async function poll() {
    if (!document.hidden) await refresh();
    if (!ctrl.signal.aborted) timer = setTimeout(poll, 2000);
  }

  const onFilter = () => render();
  $("filter-status").addEventListener("change", onFilter);
  $("filter-kind").addEventListener("change", onFilter);
  body.replaceChildren();
  poll();
  return () => {
    ctrl.abort();
    clearTimeout(timer);
    $("filter-status").removeEventListener("change", onFilter);
    $("filter-kind").removeEventListener("change", onFilter);
  };
}
