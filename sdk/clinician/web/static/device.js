// The device's heart-rate trend with its AF episodes shaded, from /api/devices/<device>/timeline.
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  const box = document.getElementById("hr");
  if (!box) return;
  const response = await fetch(box.dataset.src, {credentials: "same-origin"});
  const data = await response.json();
  if (!response.ok) { box.textContent = data.error; return; }
  const x = data.hr.map(([t]) => Date.parse(t) / 1000), y = data.hr.map(([, bpm]) => bpm);
  const now = Date.now() / 1000;
  const bands = data.af.map(e => ({x0: Date.parse(e.start) / 1000, x1: e.end ? Date.parse(e.end) / 1000 : now,
                                   label: "AF"}));
  // hours and minutes; seconds too when the ticks are less than a minute apart (span: the visible time range)
  const clock = (t, span) => new Date(t * 1000).toISOString().slice(11, span > 0 && span < 600 ? 19 : 16);
  new HSPlot(box, {x: x, y: y, yLabel: "heart rate (bpm)", xLabel: "time (UTC)", trace: null, bands: bands,
                   marks: [], xFormat: clock, yFormat: (v) => v === null ? "—" : v.toFixed(0), height: 220});
  box.dataset.ready = "1";
});
