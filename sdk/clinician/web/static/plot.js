// A small interactive SVG plot: one time axis, a signal on the left axis, an optional filled trace on its own
// right axis, marks (beats, the event) and shaded bands. Wheel or the + / − buttons zoom in time around the cursor
// (or the centre), dragging pans, hovering shows the values under the cursor. The visible range is kept in the
// container's data-x0 / data-x1 so that tests and people can read it.
"use strict";
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(12));
  return ticks;
}

class HSPlot {
  // options: {x: [...], y: [...], yLabel, trace: [...] | null, traceLabel, marks: [{x, label, dashed}],
  //           bands: [{x0, x1, label}], xLabel, xFormat: (x, span) => text, yFormat, height}
  constructor(container, options) {
    this.el = container;
    this.o = Object.assign({height: 280, xFormat: (x) => x.toFixed(2), yFormat: (y) => y.toFixed(3)}, options);
    const xs = this.o.x;
    this.full = [xs[0], xs[xs.length - 1] > xs[0] ? xs[xs.length - 1] : xs[0] + 1];
    this.view = this.full.slice();
    const finite = this.o.y.filter(Number.isFinite);
    let lo = Math.min(...finite), hi = Math.max(...finite);
    if (!(hi > lo)) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.08;
    this.yRange = [lo - pad, hi + pad];
    this.traceMax = this.o.trace ? Math.max(1e-12, ...this.o.trace.map(Math.abs)) : 1;
    this.build();
    this.draw();
  }

  build() {
    this.el.textContent = "";
    const bar = document.createElement("div");
    bar.className = "plot-tools";
    for (const [text, title, name, action] of [["+", "Zoom in", "zoom-in", () => this.zoom(0.5)],
                                               ["−", "Zoom out", "zoom-out", () => this.zoom(2)],
                                               ["Reset", "Show everything", "zoom-reset", () => this.reset()]]) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = text; b.title = title; b.className = name;
      b.addEventListener("click", action);
      bar.appendChild(b);
    }
    this.readout = document.createElement("span");
    this.readout.className = "readout";
    bar.appendChild(this.readout);
    this.el.appendChild(bar);
    this.width = Math.max(320, this.el.clientWidth || 900);
    this.m = {l: 64, r: this.o.trace ? 64 : 16, t: 18, b: 40};
    this.root = svg("svg", {width: this.width, height: this.o.height, class: "plot-svg",
                            viewBox: `0 0 ${this.width} ${this.o.height}`}, this.el);
    this.root.setAttribute("role", "img");
    this.root.setAttribute("aria-label", this.o.yLabel + " over " + this.o.xLabel);
    svg("clipPath", {id: this.clipId()}, svg("defs", {}, this.root)).appendChild(
      svg("rect", {x: this.m.l, y: this.m.t, width: this.innerW(), height: this.innerH()}));
    this.layer = svg("g", {}, this.root);
    this.cursor = svg("line", {class: "cursor", y1: this.m.t, y2: this.o.height - this.m.b, visibility: "hidden"},
                      this.root);
    this.root.addEventListener("wheel", (e) => { e.preventDefault(); this.zoom(e.deltaY > 0 ? 1.25 : 0.8, this.xAt(e)); },
                               {passive: false});
    this.root.addEventListener("pointerdown", (e) => { this.drag = {x: e.clientX, view: this.view.slice()};
                                                       this.root.setPointerCapture(e.pointerId); });
    this.root.addEventListener("pointerup", () => { this.drag = null; });
    this.root.addEventListener("pointermove", (e) => this.pointer(e));
    this.root.addEventListener("pointerleave", () => { this.cursor.setAttribute("visibility", "hidden"); });
  }

  clipId() { return this._clip || (this._clip = "clip" + Math.random().toString(36).slice(2)); }
  innerW() { return this.width - this.m.l - this.m.r; }
  innerH() { return this.o.height - this.m.t - this.m.b; }
  px(x) { return this.m.l + (x - this.view[0]) / (this.view[1] - this.view[0]) * this.innerW(); }
  py(y) { return this.m.t + (1 - (y - this.yRange[0]) / (this.yRange[1] - this.yRange[0])) * this.innerH(); }
  pt(v) { return this.m.t + (1 - v / this.traceMax) * this.innerH(); }
  xAt(e) {
    const box = this.root.getBoundingClientRect();
    const sx = (e.clientX - box.left) * this.width / box.width;
    return this.view[0] + (sx - this.m.l) / this.innerW() * (this.view[1] - this.view[0]);
  }

  zoom(factor, around) {
    const [a, b] = this.view, c = around === undefined ? (a + b) / 2 : around;
    const fullSpan = this.full[1] - this.full[0];
    const span = Math.min(fullSpan, Math.max((b - a) * factor, fullSpan / 2000));
    const left = (c - a) / (b - a);
    this.setView(c - span * left, c + span * (1 - left));
  }

  reset() { this.setView(this.full[0], this.full[1]); }

  setView(a, b) {
    const span = b - a;
    if (a < this.full[0]) { a = this.full[0]; b = a + span; }
    if (b > this.full[1]) { b = this.full[1]; a = Math.max(this.full[0], b - span); }
    this.view = [a, b];
    this.draw();
  }

  pointer(e) {
    if (this.drag) {
      const box = this.root.getBoundingClientRect();
      const dx = (e.clientX - this.drag.x) * this.width / box.width / this.innerW() * (this.drag.view[1] - this.drag.view[0]);
      this.setView(this.drag.view[0] - dx, this.drag.view[1] - dx);
      return;
    }
    const x = this.xAt(e), xs = this.o.x;
    if (x < this.view[0] || x > this.view[1]) return;
    let lo = 0, hi = xs.length - 1;
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (xs[mid] <= x) lo = mid; else hi = mid; }
    const i = Math.abs(xs[hi] - x) < Math.abs(xs[lo] - x) ? hi : lo;
    this.cursor.setAttribute("x1", this.px(xs[i])); this.cursor.setAttribute("x2", this.px(xs[i]));
    this.cursor.setAttribute("visibility", "visible");
    let text = `${this.o.xLabel} ${this.o.xFormat(xs[i], 0)} · ${this.o.yLabel} ${this.o.yFormat(this.o.y[i])}`;
    if (this.o.trace) text += ` · ${this.o.traceLabel} ${this.o.trace[i].toFixed(3)}`;
    this.readout.textContent = text;
  }

  draw() {
    const o = this.o, g = this.layer, xs = o.x;
    this.el.dataset.x0 = this.view[0].toFixed(4);
    this.el.dataset.x1 = this.view[1].toFixed(4);
    g.textContent = "";
    const inner = svg("g", {"clip-path": `url(#${this.clipId()})`}, g);
    for (const band of o.bands || []) {
      const x0 = this.px(Math.max(band.x0, this.view[0])), x1 = this.px(Math.min(band.x1, this.view[1]));
      if (x1 > x0) svg("rect", {class: "band", x: x0, y: this.m.t, width: x1 - x0, height: this.innerH()}, inner)
        .appendChild(svg("title", {})).textContent = band.label;
    }
    // only the visible samples, thinned to about two per pixel column
    let first = 0, last = xs.length - 1;
    while (first < last && xs[first + 1] < this.view[0]) first++;
    while (last > first && xs[last - 1] > this.view[1]) last--;
    const step = Math.max(1, Math.floor((last - first) / (2 * this.innerW())));
    const visible = [];
    for (let i = first; i <= last; i += step) visible.push(i);
    if (o.trace) {
      const base = this.pt(0);
      const area = visible.map(i => `${this.px(xs[i]).toFixed(1)},${this.pt(Math.abs(o.trace[i])).toFixed(1)}`);
      svg("polygon", {class: "trace", points: `${this.px(xs[first])},${base} ${area.join(" ")} ${this.px(xs[last])},${base}`}, inner);
    }
    const pts = visible.filter(i => Number.isFinite(o.y[i])).map(i => `${this.px(xs[i]).toFixed(1)},${this.py(o.y[i]).toFixed(1)}`);
    svg("polyline", {class: o.bars ? "bars" : "signal", points: pts.join(" ")}, inner);
    for (const mark of o.marks || []) {
      if (mark.x < this.view[0] || mark.x > this.view[1]) continue;
      const x = this.px(mark.x);
      svg("line", {class: mark.dashed ? "event" : "beat", x1: x, x2: x, y1: this.m.t, y2: this.o.height - this.m.b}, inner);
      if (mark.label) {
        const t = svg("text", {class: "mark-label", x: x, y: this.m.t + 12, "text-anchor": "middle"}, inner);
        t.textContent = mark.label;
      }
    }
    // axes
    svg("rect", {class: "frame", x: this.m.l, y: this.m.t, width: this.innerW(), height: this.innerH()}, g);
    const span = this.view[1] - this.view[0];
    for (const t of niceTicks(this.view[0], this.view[1], Math.max(3, Math.floor(this.innerW() / 90)))) {
      const x = this.px(t);
      svg("line", {class: "tick", x1: x, x2: x, y1: this.o.height - this.m.b, y2: this.o.height - this.m.b + 5}, g);
      svg("text", {class: "tick-label", x: x, y: this.o.height - this.m.b + 18, "text-anchor": "middle"}, g)
        .textContent = o.xFormat(t, span);
    }
    for (const t of niceTicks(this.yRange[0], this.yRange[1], 5)) {
      const y = this.py(t);
      svg("line", {class: "grid", x1: this.m.l, x2: this.width - this.m.r, y1: y, y2: y}, g);
      svg("text", {class: "tick-label", x: this.m.l - 6, y: y + 4, "text-anchor": "end"}, g).textContent = +t.toFixed(6);
    }
    svg("text", {class: "axis-label", x: this.m.l + this.innerW() / 2, y: this.o.height - 6, "text-anchor": "middle"}, g)
      .textContent = o.xLabel;
    svg("text", {class: "axis-label", x: 14, y: this.m.t + this.innerH() / 2, "text-anchor": "middle",
                 transform: `rotate(-90 14 ${this.m.t + this.innerH() / 2})`}, g).textContent = o.yLabel;
    if (o.trace) {
      const x = this.width - 14, y = this.m.t + this.innerH() / 2;
      svg("text", {class: "axis-label trace-label", x: x, y: y, "text-anchor": "middle", transform: `rotate(90 ${x} ${y})`}, g)
        .textContent = o.traceLabel;
    }
  }
}
window.HSPlot = HSPlot;
