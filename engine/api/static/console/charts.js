/* Herald console: SVG charts drawn by hand (no library).
 *
 * RateChart: a rolling line chart of segments per second per sender, one <path> per
 * sender whose "d" is rewritten once per render, and a dashed line at each sender's
 * limit. Points are pushed as the live stream's messages come (cheap: arrays of
 * numbers); render() touches the DOM, and the caller calls it at most once a frame.
 *
 * barChart: deliveries and clicks by hour, rebuilt when the report is read.
 */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLOURS = 8;
  const rateFormat = new Intl.NumberFormat("en-US", {maximumFractionDigits: 1});
  const countFormat = new Intl.NumberFormat("en-US");

  function svgEl(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.append(node);
    return node;
  }

  /** The smallest of 1, 2, 2.5, 5 times a power of ten at or over v (1 when v <= 0). */
  function niceMax(v) {
    if (!(v > 0) || !Number.isFinite(v)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * 0.999999) return m * p;
    return 10 * p;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()]
      .map((n) => String(n).padStart(2, "0")).join(":");
  }

  class RateChart {
    /** svg: the <svg> (its viewBox gives the size); legend: a <ul>; desc: the svg's
     *  <desc>, kept as the chart's text alternative. */
    constructor(svg, legend, desc, capacity) {
      this.svg = svg;
      this.legend = legend;
      this.desc = desc;
      this.capacity = capacity || 120;
      const box = (svg.getAttribute("viewBox") || "0 0 640 260").split(/\s+/).map(Number);
      this.w = box[2];
      this.h = box[3];
      this.m = {l: 52, r: 14, t: 14, b: 30};
      this.times = [];
      this.received = 0;
      this.series = new Map();  // name -> {values, limit, path, line, item, colour}
      this.ymax = 0;
      this.dirty = false;
      this.build();
    }

    build() {
      const {svg, m, w, h} = this;
      svg.replaceChildren(this.desc);
      this.gridGroup = svgEl("g", {"aria-hidden": "true"}, svg);
      this.yLabels = [];
      for (let i = 0; i <= 4; i++) {
        const y = m.t + (h - m.t - m.b) * (1 - i / 4);
        svgEl("line", {class: "grid", x1: m.l, x2: w - m.r, y1: y, y2: y}, this.gridGroup);
        const t = svgEl("text", {x: m.l - 6, y: y + 4, "text-anchor": "end"}, this.gridGroup);
        this.yLabels.push(t);
      }
      svgEl("line", {class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: h - m.b}, this.gridGroup);
      svgEl("line", {class: "axis", x1: m.l, x2: w - m.r, y1: h - m.b, y2: h - m.b},
            this.gridGroup);
      this.xFirst = svgEl("text", {x: m.l, y: h - m.b + 18}, this.gridGroup);
      this.xLast = svgEl("text", {x: w - m.r, y: h - m.b + 18, "text-anchor": "end"},
                         this.gridGroup);
      const unit = svgEl("text", {x: m.l + 4, y: m.t + 10}, this.gridGroup);
      unit.textContent = "segments/s";
      this.empty = svgEl("text", {class: "empty", x: w / 2, y: h / 2, "text-anchor": "middle"},
                         svg);
      this.empty.textContent = "No figures yet";
      this.plot = svgEl("g", {"aria-hidden": "true"}, svg);
    }

    /** Forget every point and sender (another mailing). */
    reset() {
      this.times = [];
      this.received = 0;
      this.series.clear();
      this.legend.replaceChildren();
      this.ymax = 0;
      this.build();
      this.svg.setAttribute("data-points", "0");
      this.svg.setAttribute("data-received", "0");
      this.desc.textContent = "No figures yet.";
    }

    /** One live message: its time (s) and its senders [{name, rate, limit}]. */
    push(at, senders) {
      if (this.times.length && at <= this.times[this.times.length - 1]) return;
      this.times.push(at);
      this.received++;
      const seen = new Set();
      for (const s of senders || []) {
        let one = this.series.get(s.name);
        if (!one) one = this.addSeries(s.name);
        one.values.push(Number.isFinite(s.rate) ? Math.max(0, s.rate) : NaN);
        one.limit = Number.isFinite(s.limit) && s.limit > 0 ? s.limit : null;
        seen.add(s.name);
      }
      for (const [name, one] of this.series) if (!seen.has(name)) one.values.push(NaN);
      if (this.times.length > this.capacity) {
        this.times.shift();
        for (const one of this.series.values()) one.values.shift();
      }
      this.dirty = true;
    }

    addSeries(name) {
      const colour = this.series.size % COLOURS;
      const values = new Array(this.times.length - 1).fill(NaN);
      const path = svgEl("path", {class: "series c" + colour, "data-sender": name,
                                  "data-points": 0, d: ""}, this.plot);
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch c" + colour;
      const label = document.createElement("span");
      item.append(swatch, label);
      this.legend.append(item);
      const one = {values, limit: null, path, line: null, item, label, colour, text: ""};
      this.series.set(name, one);
      return one;
    }

    /** Redraw: one "d" per series; the rest only when it changed. */
    render() {
      if (!this.dirty) return;
      this.dirty = false;
      const {m, w, h, times} = this;
      const n = times.length;
      let top = 0;
      for (const one of this.series.values()) {
        for (const v of one.values) if (v > top) top = v;
        if (one.limit && one.limit > top) top = one.limit;
      }
      const ymax = niceMax(top * 1.05);
      if (ymax !== this.ymax) {
        this.ymax = ymax;
        this.yLabels.forEach((t, i) => { t.textContent = rateFormat.format(ymax * i / 4); });
      }
      const x0 = n ? times[0] : 0;
      const span = n > 1 ? times[n - 1] - x0 : 1;
      const pw = w - m.l - m.r, ph = h - m.t - m.b;
      const X = (t) => (m.l + (t - x0) / span * pw).toFixed(1);
      const Y = (v) => (m.t + ph * (1 - v / ymax)).toFixed(1);
      this.xFirst.textContent = n ? clock(times[0]) : "";
      this.xLast.textContent = n > 1 ? clock(times[n - 1]) : "";
      if (this.series.size > 0 && this.empty.textContent) this.empty.textContent = "";
      const parts = [];
      for (const [name, one] of this.series) {
        let d = "", pen = false, count = 0;
        for (let i = 0; i < n; i++) {
          const v = one.values[i];
          if (!Number.isFinite(v)) { pen = false; continue; }
          d += (pen ? "L" : "M") + X(times[i]) + " " + Y(v);
          pen = true;
          count++;
        }
        if (count === 1) d += "h2";  // a lone point still shows
        one.path.setAttribute("d", d);
        one.path.setAttribute("data-points", String(count));
        if (one.limit !== null) {
          if (!one.line) {
            one.line = svgEl("line", {class: "limit c" + one.colour, "data-sender": name,
                                      x1: m.l, x2: w - m.r}, this.plot);
          }
          const y = Y(one.limit);
          if (one.line.getAttribute("y1") !== y) {
            one.line.setAttribute("y1", y);
            one.line.setAttribute("y2", y);
          }
        } else if (one.line) {
          one.line.remove();
          one.line = null;
        }
        const last = one.values[n - 1];
        const now = Number.isFinite(last) ? rateFormat.format(last) : "—";
        const limit = one.limit !== null ? ", limit " + rateFormat.format(one.limit) : "";
        const text = name + ": " + now + "/s" + limit;
        if (text !== one.text) { one.text = text; one.label.textContent = text; }
        parts.push(name + " " + now + " segments per second" +
                   (one.limit !== null ? " (limit " + rateFormat.format(one.limit) + ")" : ""));
      }
      this.svg.setAttribute("data-points", String(n));
      this.svg.setAttribute("data-received", String(this.received));
      this.desc.textContent = parts.length
        ? "Now: " + parts.join("; ") + ". " + n + " points."
        : "No figures yet.";
    }
  }

  const HOUR = 3600 * 1000;

  /** Rows keyed "YYYY-MM-DDTHH:00Z" with every missing hour between them filled with
   *  zeros (at most 31 days of hours: older ones are left out). */
  function hourly(rows) {
    const by = new Map();
    for (const r of rows) {
      const t = Date.parse(r.hour);
      if (Number.isFinite(t)) by.set(t, r);
    }
    const keys = [...by.keys()].sort((a, b) => a - b);
    if (!keys.length) return [];
    const out = [];
    const last = keys[keys.length - 1];
    const first = Math.max(keys[0], last - 31 * 24 * HOUR);
    for (let t = first; t <= last; t += HOUR) {
      out.push({t, row: by.get(t) || {hour: new Date(t).toISOString(), sent: 0,
                                      delivered: 0, clicks: 0}});
    }
    return out;
  }

  function hourLabel(t, sameDay) {
    const iso = new Date(t).toISOString();  // UTC, like the report's keys
    return sameDay ? iso.slice(11, 16) : iso.slice(5, 10) + " " + iso.slice(11, 13) + "h";
  }

  /** Deliveries and clicks per hour as grouped bars; desc gets the figures in words. */
  function barChart(svg, desc, rows) {
    const box = (svg.getAttribute("viewBox") || "0 0 640 240").split(/\s+/).map(Number);
    const w = box[2], h = box[3];
    const m = {l: 52, r: 14, t: 14, b: 34};
    svg.replaceChildren(desc);
    const points = hourly(rows);
    svg.setAttribute("data-points", String(points.length));
    if (!points.length) {
      const t = svgEl("text", {class: "empty", x: w / 2, y: h / 2, "text-anchor": "middle"}, svg);
      t.textContent = "Nothing delivered yet";
      desc.textContent = "Nothing delivered yet.";
      return;
    }
    let top = 0;
    for (const p of points) top = Math.max(top, p.row.delivered, p.row.clicks);
    const ymax = niceMax(top * 1.05);
    const pw = w - m.l - m.r, ph = h - m.t - m.b;
    const g = svgEl("g", {"aria-hidden": "true"}, svg);
    for (let i = 0; i <= 4; i++) {
      const y = m.t + ph * (1 - i / 4);
      svgEl("line", {class: "grid", x1: m.l, x2: w - m.r, y1: y, y2: y}, g);
      svgEl("text", {x: m.l - 6, y: y + 4, "text-anchor": "end"}, g).textContent =
        countFormat.format(Math.round(ymax * i / 4 * 100) / 100);
    }
    svgEl("line", {class: "axis", x1: m.l, x2: w - m.r, y1: h - m.b, y2: h - m.b}, g);
    const slot = pw / points.length;
    const bar = Math.max(1, Math.min(24, slot * 0.4));
    const sameDay = new Date(points[0].t).toISOString().slice(0, 10) ===
      new Date(points[points.length - 1].t).toISOString().slice(0, 10);
    const every = Math.max(1, Math.ceil(points.length / 8));
    const Y = (v) => m.t + ph * (1 - v / ymax);
    points.forEach((p, i) => {
      const cx = m.l + slot * (i + 0.5);
      for (const [key, dx] of [["delivered", -bar], ["clicks", 0]]) {
        const v = p.row[key] || 0;
        const y = Y(v);
        svgEl("rect", {class: key, x: (cx + dx).toFixed(1), y: y.toFixed(1),
                       width: bar.toFixed(1), height: Math.max(0, h - m.b - y).toFixed(1)}, g);
      }
      if (i % every === 0) {
        svgEl("text", {x: cx.toFixed(1), y: h - m.b + 16, "text-anchor": "middle"}, g)
          .textContent = hourLabel(p.t, sameDay);
      }
    });
    let delivered = 0, clicks = 0;
    for (const p of points) { delivered += p.row.delivered || 0; clicks += p.row.clicks || 0; }
    desc.textContent = points.length + " hours from " + hourLabel(points[0].t, false) +
      " UTC: " + countFormat.format(delivered) + " delivered and " +
      countFormat.format(clicks) + " clicks in all; the table below has each hour.";
  }

  window.HeraldCharts = {RateChart, barChart, hourly, niceMax};
})();
