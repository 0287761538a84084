// The alert's excerpt (s, mV) with its saliency trace, beat marks and the event, from /api/alerts/<id>.
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  const box = document.getElementById("trace");
  const response = await fetch(box.dataset.src, {credentials: "same-origin"});
  const data = await response.json();
  if (!response.ok) { box.textContent = data.error; return; }
  const x = data.signal.map((_, i) => i / data.fs);
  const marks = data.beats.map(([t, label]) => ({x: t, label: label === null ? "·" : label}));
  marks.push({x: data.event_s, dashed: true});
  new HSPlot(box, {x: x, y: data.signal, yLabel: data.unit, xLabel: "time (s)", trace: data.trace,
                   traceLabel: "saliency", marks: marks, xFormat: (t, span) => t.toFixed(span && span < 0.5 ? 3 : 2)});
  box.dataset.ready = "1";
});
