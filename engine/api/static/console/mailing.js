/* Herald console: one mailing's page: live counts and chart, reports, the mailing log.
 * console.js (loaded first) has the helpers, the API calls and the routing. */
"use strict";

// -- one mailing --------------------------------------------------------------------------

const COUNT_LABELS = {
  recipients: "Recipients", sent: "Sent", delivered: "Delivered", undelivered: "Undelivered",
  failed: "Failed", unknown: "Unknown", segments: "Segments", clicks: "Clicks",
  unique_clicks: "Unique clicks", unsubscribed: "Unsubscribed", control: "Control group",
};
const SKIP_LABELS = {
  duplicate: "Duplicate phones", suppressed: "Suppressed", invalid_phone: "Invalid phones",
  policy: "Over the sending policy", empty: "Empty text", too_long: "Too long",
  control: "Control group", cancelled: "Cancelled", not_subscribed: "Not subscribed",
};
const CHANNEL_COLUMNS = [
  ["recipients", "Recipients"], ["sent", "Sent"], ["delivered", "Delivered"],
  ["undelivered", "Undelivered"], ["failed", "Failed"], ["unknown", "Unknown"],
  ["segments", "Segments"], ["clicks", "Clicks"], ["unique_clicks", "Unique clicks"],
  ["unsubscribed", "Unsubscribed"], ["control", "Control"],
  ["delivery_rate", "Delivery rate", percent], ["ctr", "CTR", percent],
];
const VARIANT_COLUMNS = [
  ["recipients", "Recipients"], ["sent", "Sent"], ["delivered", "Delivered"],
  ["delivery_rate", "Delivery rate", percent], ["clicks", "Clicks"],
  ["unique_clicks", "Unique clicks"], ["ctr", "CTR", percent], ["unsubscribed", "Unsubscribed"],
];
const LIVE_STATUSES = new Set(["running"]);

let chart = null;

function headRow(table, names) {
  table.tHead.replaceChildren(el("tr", {}, ...names.map((n) =>
    el("th", {scope: "col", textContent: n}))));
}

function cells(row, columns) {
  return columns.map(([key, , f]) => el("td", {className: "num",
                                               textContent: (f || num)(row[key])}));
}

function emptyRow(table, text) {
  const span = Math.max(1, table.tHead.rows[0] ? table.tHead.rows[0].cells.length : 1);
  table.tBodies[0].replaceChildren(el("tr", {}, el("td", {colSpan: span, className: "muted",
                                                          textContent: text})));
}

function mailingView(id) {
  show("view-mailing", "Mailing " + id);
  const ctrl = new AbortController();
  const signal = ctrl.signal;
  if (!chart) {
    chart = new window.HeraldCharts.RateChart($("sender-chart"), $("sender-legend"),
                                              $("sender-chart-desc"), 120);
  }
  chart.reset();
  $("counts").replaceChildren();
  $("skipped").replaceChildren();
  $("mailing-meta").replaceChildren();
  setText($("mailing-title"), "Mailing #" + id);
  setText($("mailing-status"), "…");
  setText($("mailing-live"), "");
  $("mailing-log").textContent = "Loading…";
  for (const t of ["channel-report", "variants"]) {
    $(t).tHead.replaceChildren();
    $(t).tBodies[0].replaceChildren();
  }
  for (const t of ["undeliveries", "click-map", "delivery-table"]) $(t).tBodies[0].replaceChildren();
  $("variants-section").hidden = true;
  setText($("reports-at"), "");

  const countNodes = new Map();
  let mailing = null, metaKey = "", latest = null, frame = 0, logTimer = 0;
  let prevStatus = null, prevRun = null;

  function countTile(box, key, label) {
    let node = countNodes.get(key);
    if (!node) {
      node = el("span", {className: "value", textContent: "0", dataset: {count: key}});
      box.append(el("div", {className: "count"}, el("span", {className: "label",
                                                              textContent: label}), node));
      countNodes.set(key, node);
    }
    return node;
  }

  function applyCounts(c) {
    for (const [key, value] of Object.entries(c)) {
      if (key === "skipped") continue;
      setText(countTile($("counts"), key, COUNT_LABELS[key] || key.replace(/_/g, " ")),
              num(value));
    }
    for (const [reason, value] of Object.entries(c.skipped || {})) {
      setText(countTile($("skipped"), "skipped." + reason,
                        SKIP_LABELS[reason] || reason.replace(/_/g, " ")), num(value));
    }
  }

  function applyMailing(m) {
    mailing = m;
    setText($("mailing-title"), "#" + m.id + " " + m.name);
    document.title = m.name + " · Herald console";
    const s = $("mailing-status");
    setText(s, m.status);
    if (s.className !== "badge " + m.status) s.className = "badge " + m.status;
    setProgress($("mailing-progress"), $("mailing-progress-text"), m);
    const ok = allowed(m);
    for (const a of ACTIONS) {
      const hide = !ok.has(a);
      if ($(a).hidden !== hide) $(a).hidden = hide;
    }
    const o = m.options || {};
    const sched = o.schedule || {};
    const meta = [
      ["Kind", m.kind], ["Resource", m.resource], ["Schedule state", m.state],
      ["Schedule", sched.cron ? "cron " + sched.cron : sched.at ? "at " + sched.at : "on start"],
      ["Next launch", m.next_launch_at ? m.next_launch_at + " (" + m.timezone + ")" : "—"],
      ["Runs", num(m.launches_total) + " launches, " + num(m.tests_total) + " test sends"],
    ];
    if (m.variants) {
      meta.push(["Variants", String(m.variants)],
                ["Test share", o.test_share !== undefined ? o.test_share + "%" : "—"],
                ["Winner by", o.winner || "—"],
                ["Winner", m.winner ? "variant " + m.winner : "not chosen yet"]);
    }
    if (o.control) meta.push(["Control group", o.control + "%"]);
    const key = JSON.stringify(meta);
    if (key !== metaKey) {
      metaKey = key;
      $("mailing-meta").replaceChildren(...meta.flatMap(([k, v]) =>
        [el("dt", {textContent: k}), el("dd", {textContent: v})]));
    }
    $("variants-section").hidden = !(m.variants > 0 || m.kind === "multivariate");
    // a run that ended, or a new one: the reports and the log change
    if (prevStatus !== null && (m.run_id !== prevRun ||
        (LIVE_STATUSES.has(prevStatus) && !LIVE_STATUSES.has(m.status)))) {
      loadReports().catch(report);
      loadLog();
    }
    if (LIVE_STATUSES.has(m.status) && !logTimer) {
      // while a run goes on, its log and reports move too (each a few store reads)
      logTimer = setInterval(() => { loadLog(); loadReports().catch(report); }, 3000);
    } else if (!LIVE_STATUSES.has(m.status) && logTimer) {
      clearInterval(logTimer);
      logTimer = 0;
    }
    prevStatus = m.status;
    prevRun = m.run_id;
  }

  function paint() {
    frame = 0;
    const d = latest;
    latest = null;
    if (d) {
      if (d.mailing) applyMailing(d.mailing);
      if (d.counts) applyCounts(d.counts);
      setText($("mailing-live"), "live, " + clockFmt.format(new Date(d.at * 1000)));
    }
    chart.render();
  }

  function onStatus(d) {
    chart.push(d.at, d.senders);  // cheap: numbers into arrays
    latest = d;
    if (!frame) frame = requestAnimationFrame(paint);
  }

  let pollTimer = 0;

  /** No live stream here (an older server): poll the mailing's status instead. */
  async function poll() {
    try {
      const m = await api("GET", "/mailings/" + id, undefined, signal);
      applyMailing(m);
    } catch (err) { report(err); }
    if (!signal.aborted) pollTimer = setTimeout(poll, 2000);
  }

  function onState(what, seconds) {
    if (what === "retry") setText($("mailing-live"), "connection lost; retrying in " + seconds + " s");
    else if (what === "gone") {
      setText($("mailing-live"), "no live stream: polling every 2 s");
      if (!pollTimer) pollTimer = setTimeout(poll, 2000);
    }
  }

  async function loadLog() {
    if (!mailing || mailing.run_id === null || mailing.run_id === undefined) {
      $("mailing-log").textContent = "No run yet: the log shows once the mailing has started.";
      return;
    }
    try {
      $("mailing-log").textContent = formatLog(await api("GET", "/mailings/" + id + "/log",
                                                         undefined, signal));
    } catch (err) {
      if (err.name === "AbortError" || err.status === 401) return;
      $("mailing-log").textContent = err.status === 409 || err.status === 404
        ? "No run yet: the log shows once the mailing has started." : "The log: " + err.message;
    }
  }

  async function loadReports() {
    const q = "/reports/channel?mailing=" + id;
    const get = (path) => api("GET", path, undefined, signal);
    const multi = mailing && (mailing.variants > 0 || mailing.kind === "multivariate");
    const parts = await Promise.allSettled([
      get(q), get(q + "&by=hour"), get("/reports/undeliveries?mailing=" + id),
      get("/reports/clicks?mailing=" + id), multi ? get(q + "&by=variant") : null,
    ]);
    if (signal.aborted) return;
    const [channel, hours, und, clicks, variants] = parts;
    const failed = parts.find((p) => p.status === "rejected");
    if (failed) report(failed.reason);

    const ch = $("channel-report");
    headRow(ch, CHANNEL_COLUMNS.map((c) => c[1]));
    if (channel.status === "fulfilled" && channel.value.rows.length) {
      ch.tBodies[0].replaceChildren(...channel.value.rows.map((r) =>
        el("tr", {}, ...cells(r, CHANNEL_COLUMNS))));
    } else emptyRow(ch, "Nothing sent yet.");

    const hourRows = hours.status === "fulfilled" ? hours.value.rows : [];
    window.HeraldCharts.barChart($("delivery-chart"), $("delivery-chart-desc"), hourRows);
    const dt = $("delivery-table");
    if (hourRows.length) {
      dt.tBodies[0].replaceChildren(...hourRows.map((r) => el("tr", {},
        el("td", {textContent: r.hour}), ...cells(r, [["sent"], ["delivered"], ["clicks"]]))));
    } else emptyRow(dt, "Nothing yet.");

    const ut = $("undeliveries");
    if (und.status === "fulfilled" && und.value.rows.length) {
      ut.tBodies[0].replaceChildren(...und.value.rows.map((r) => el("tr", {},
        el("td", {textContent: r.reason}), el("td", {className: "num", textContent: num(r.count)}),
        el("td", {className: "num", textContent: percent(r.share)}))));
    } else emptyRow(ut, "No undelivered message.");

    const ct = $("click-map");
    if (clicks.status === "fulfilled" && clicks.value.rows.length) {
      ct.tBodies[0].replaceChildren(...clicks.value.rows.map((r) => el("tr", {},
        el("td", {className: "wrap", textContent: r.url}),
        el("td", {className: "num", textContent: num(r.clicks)}),
        el("td", {className: "num", textContent: num(r.unique_clicks)}),
        el("td", {className: "num", textContent: percent(r.share)}))));
    } else emptyRow(ct, "No click yet.");

    if (multi) renderVariants(variants.status === "fulfilled" ? variants.value.rows : []);
    setText($("reports-at"), "as of " + clockFmt.format(new Date()));
  }

  function renderVariants(rows) {
    const t = $("variants");
    const pickable = canSend() && mailing.options && mailing.options.winner === "manual" &&
      !mailing.winner;
    headRow(t, ["Variant", ...VARIANT_COLUMNS.map((c) => c[1]), ...(pickable ? ["Pick"] : [])]);
    if (!rows.length) { emptyRow(t, "No variant sent yet."); return; }
    const numbers = rows.map((r) => r.variant).filter((v) => v);
    t.tBodies[0].replaceChildren(...rows.map((r) => {
      const won = mailing.winner && r.variant === mailing.winner;
      const name = el("th", {scope: "row", textContent: "Variant " + (r.variant || "—")});
      if (won) name.append(" ", el("strong", {textContent: "★ winner"}));
      const tr = el("tr", {className: won ? "winner" : "", dataset: {variant: String(r.variant)}},
                    name, ...cells(r, VARIANT_COLUMNS));
      if (pickable) {
        const b = el("button", {type: "button", textContent: "Pick",
                                ariaLabel: "Pick variant " + r.variant + " as the winner"});
        b.addEventListener("click", () => ask({
          title: "Pick the winner of “" + mailing.name + "”", confirm: "Send the winner",
          text: "The variant you pick goes now to the rest of the audience of mailing #" +
            mailing.id + " (everyone who was not in the test).",
          variants: numbers, variant: r.variant,
          run: (v) => api("POST", "/mailings/" + id + "/pick", {variant: v.variant}),
          done: (answer) => {
            applyMailing(answer);  // the winner is marked at once, not at the next push
            say("Variant " + answer.winner + " goes to the rest.");
            loadReports().catch(report);
          },
        }));
        tr.append(el("td", {}, b));
      }
      return tr;
    }));
  }

  const onAction = (ev) => {
    if (!mailing) return;
    act(ev.currentTarget.id, mailing, (answer) => {
      if (answer && answer.status) applyMailing(Object.assign({}, mailing, answer));
    });
  };
  for (const a of ACTIONS) $(a).addEventListener("click", onAction);
  const onRefresh = () => { loadReports().catch(report); loadLog(); };
  $("refresh-reports").addEventListener("click", onRefresh);

  api("GET", "/mailings/" + id, undefined, signal).then((m) => {
    if (signal.aborted) return;
    if (!latest) applyMailing(m);
    loadReports().catch(report);
    loadLog();
    sse("/mailings/" + id + "/live", "status", onStatus, signal, onState);
  }, (err) => {
    report(err);
    if (err.status === 404) setText($("mailing-status"), "not found");
  });

  return () => {
    ctrl.abort();
    if (frame) cancelAnimationFrame(frame);
    clearInterval(logTimer);
    clearTimeout(pollTimer);
    for (const a of ACTIONS) $(a).removeEventListener("click", onAction);
    $("refresh-reports").removeEventListener("click", onRefresh);
  };
}

// -- the mailing log, as `herald mailing log` prints it (engine/mailing_log.py) ----------

const LOG_LABELS = [
  ["mailing_started", "Mailing started"], ["limit", "Limit"],
  ["audience_source", "Audience source"], ["database_id", "Database id"],
  ["segment_id", "Segment id"], ["cursor_ms", "Cursor, ms"],
  ["first_submit_ms", "First submit, ms"],
  ["subscribers_received", "Subscribers received"], ["subscribers_found", "Subscribers found"],
  ["duplicate_phones", "Duplicate phones"], ["suppressed", "Suppressed"],
  ["invalid_phones", "Invalid phones"], ["invalid_emails", "Invalid addresses"],
  ["empty", "Empty text"], ["too_long", "Too long"],
  ["policy", "Over the sending policy"], ["control", "Control group"],
  ["other_share", "In other runs' shares"], ["later", "Left for later waves"],
  ["earlier", "Taken by earlier waves"], ["recipients", "Recipients"], ["sent", "Sent"],
  ["failed", "Failed"], ["unknown", "Unknown"], ["cancelled", "Cancelled"],
  ["pending", "Pending"], ["mailing_finished", "Mailing finished"],
  ["total_time_s", "Total time, s"], ["messages_per_s", "Messages per second"],
];
const LOG_WHEN_ANY = new Set(["control", "other_share", "later", "earlier"]);
const logFloat = new Intl.NumberFormat("en-US", {minimumFractionDigits: 3,
                                                 maximumFractionDigits: 3});

function logValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    return Number.isInteger(v) ? nf.format(v) : logFloat.format(v).replace(/\.?0+$/, "");
  }
  return String(v);
}

function pyRepr(s) {
  if (s.includes("'") && !s.includes('"')) return '"' + s + '"';
  return "'" + s.replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'";
}

function specRows(log) {
  const rows = [];
  if (log.phase !== "launch" || log.is_test) {
    rows.push(["Phase (phase)", log.phase + (log.is_test ? " (test send)" : "")]);
  }
  if (log.variant !== null && log.variant !== undefined) {
    rows.push(["Variant (variant)", String(log.variant)]);
  }
  if (log.share) {
    rows.push(["Share of the audience (share)", (log.share[0] * 100).toFixed(2) + "% to " +
      (log.share[1] * 100).toFixed(2) + "%"]);
  }
  if (log.phones && log.phones.length) rows.push(["Test phones (phones)", log.phones.join(", ")]);
  if (log.due) rows.push(["Due (due)", log.due]);
  if (log.missed) {
    rows.push(["Missed launches (missed)", log.missed + " " +
      (log.missed === 1 ? "launch" : "launches") + " missed while nothing ran; run once"]);
  }
  if (log.wave !== null && log.wave !== undefined) rows.push(["Wave (wave)", String(log.wave)]);
  if (log.window) {
    rows.push(["Send times (window)", (log.window[0] || "the first") + " to " + log.window[1]]);
  }
  if (log.next_wave) rows.push(["Next wave (next_wave)", log.next_wave]);
  const decided = Object.entries(log.decided || {});
  if (decided.length) {
    const order = (k) => (/^\d+$/.test(k) ? Number(k) : 1 << 30);
    decided.sort((a, b) => order(a[0]) - order(b[0]) || (a[0] < b[0] ? -1 : 1));
    const figures = decided.map(([k, v]) => "variant " + k + ": " + logValue(v)).join(", ");
    const by = log.winner_by ? " by " + log.winner_by : "";
    const winner = log.variant !== null && log.variant !== undefined
      ? "variant " + log.variant + " won" + by : "won";
    rows.push(["Winner (decided)", winner + " (" + figures + ")"]);
  }
  return rows;
}

/** The log as a two-column table, like engine.mailing_log.format_log. */
function formatLog(log) {
  const rows = specRows(log);
  const email = log.channel === "email";
  if (email) rows.unshift(["Channel (channel)", "email"]);
  for (let [key, label] of LOG_LABELS) {
    const value = log[key];
    if (key === (email ? "invalid_phones" : "invalid_emails")) continue;
    if (email && key === "empty") continue;  // an email is never judged empty
    if (email && key === "duplicate_phones") label = "Duplicate addresses";
    if (key === "database_id" && log.audience_source !== "list") continue;
    if (key === "segment_id" && log.audience_source !== "segment") continue;
    if (LOG_WHEN_ANY.has(key) && !value && !(key === "other_share" && log.share)) continue;
    rows.push([label + " (" + key + ")", logValue(value)]);
    const reasons = key === "failed" ? log.failed_reasons : key === "unknown" ? log.unknown_reasons
      : null;
    for (const [reason, n] of Object.entries(reasons || {})) rows.push(["  " + reason, logValue(n)]);
  }
  for (const [stage, seconds] of Object.entries(log.stage_busy_s || {})) {
    rows.push([stage === "dispatch" ? "Waiting on gateways, s (all workers)"
      : "Busy: " + stage + ", s", logValue(seconds)]);
  }
  if (log.error) rows.push(["Error", log.error]);
  const width = Math.max(...rows.map(([k]) => k.length));
  const head = "Mailing log: run " + log.run_id + ", mailing " + log.mailing_id + " " +
    pyRepr(log.mailing_name) + " (" + log.status + ")";
  return [head, "-".repeat(Math.max(head.length, width + 20)),
          ...rows.map(([k, v]) => k.padEnd(width) + "  " + v)].join("\n");
}
