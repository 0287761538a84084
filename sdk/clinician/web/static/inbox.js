// The live inbox: every alert stored after the page was drawn arrives over server-sent events and takes its place
// (unreviewed first, then by severity, then newest), without a reload.
"use strict";
function rowKey(row) {
  return [Number(row.dataset.reviewed), -Number(row.dataset.severity), -Date.parse(row.dataset.time)];
}
function before(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}
function cell(parent, text, link) {
  const td = document.createElement("td");
  if (link) { const a = document.createElement("a"); a.href = link; a.textContent = text; td.appendChild(a); }
  else td.textContent = text;
  parent.appendChild(td);
  return td;
}
function newRow(alert) {
  const tr = document.createElement("tr");
  tr.className = `alert-row status-${alert.status} new`;
  Object.assign(tr.dataset, {id: alert.id, severity: alert.severity, time: alert.time,
                             reviewed: alert.status === "unreviewed" ? 0 : 1});
  const sev = cell(tr, "");
  const badge = document.createElement("span");
  badge.className = `severity s${alert.severity}`; badge.textContent = alert.severity; sev.appendChild(badge);
  cell(tr, alert.type, "/alerts/" + encodeURIComponent(alert.id));
  cell(tr, alert.label).className = "label";
  cell(tr, alert.confidence.toFixed(2));
  cell(tr, alert.device, "/devices/" + encodeURIComponent(alert.device));
  const time = document.createElement("time"); time.textContent = alert.time; cell(tr, "").appendChild(time);
  cell(tr, alert.status).className = "status";
  return tr;
}
document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live"), body = document.getElementById("alerts");
  const total = document.getElementById("total");
  const query = new URLSearchParams(live.dataset.query);
  query.set("since", live.dataset.since);
  const source = new EventSource("/events?" + query.toString());
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live off"; };
  source.addEventListener("alert", (message) => {
    const alert = JSON.parse(message.data);
    if (body.querySelector(`tr[data-id="${CSS.escape(alert.id)}"]`)) return;
    const row = newRow(alert), key = rowKey(row);
    const next = Array.from(body.children).find(other => before(key, rowKey(other)));
    body.insertBefore(row, next || null);
    total.textContent = Number(total.textContent) + 1;
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
  });
});
