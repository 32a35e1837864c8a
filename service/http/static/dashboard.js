// The dashboard: no framework and no CDN, so it works on a machine with no internet.
"use strict";

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function setStatus(message) {
  document.getElementById("status").textContent = message;
}

// The session list: every active session, refreshed every second (no reload).
function startSessionList() {
  async function refresh() {
    try {
      const sessions = [];
      let cursor = null;
      let position = 0;
      do {
        const query = new URLSearchParams({ active: "true", limit: "1000" });
        if (cursor) query.set("cursor", cursor);
        const response = await fetch("/v1/sessions?" + query);
        const page = await response.json();
        sessions.push(...page.sessions);
        cursor = page.next;
      } while (cursor && sessions.length < 5000);
      if (sessions.length) {
        const head = await (await fetch("/v1/sessions/" + encodeURIComponent(sessions[0].sessionId) + "/count")).json();
        position = head.position;
      }
      const rows = document.getElementById("rows");
      rows.replaceChildren();
      for (const session of sessions) {
        const row = document.createElement("tr");
        const link = document.createElement("a");
        link.href = "/sessions/" + encodeURIComponent(session.sessionId);
        link.textContent = session.sessionId;
        cell(row, "").appendChild(link);
        const count = cell(row, session.count, "num");
        count.dataset.session = session.sessionId;
        rows.appendChild(row);
      }
      if (!sessions.length) {
        const row = document.createElement("tr");
        cell(row, "no active sessions yet", "muted").colSpan = 2;
        rows.appendChild(row);
      }
      document.getElementById("sessions").textContent = sessions.length;
      document.getElementById("connections").textContent = sessions.reduce((n, s) => n + s.count, 0);
      document.getElementById("position").textContent = position || "–";
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      setStatus("cannot reach the service: " + error);
    }
  }
  refresh();
  setInterval(refresh, 1000);
}

// One session: its live stream (snapshot, then every record), a table and a chart.
function startSession(sessionId) {
  document.getElementById("session-id").textContent = sessionId;
  document.title = sessionId + " · Connection Ledger";
  const live = new Map();
  const history = [];
  const records = [];
  let count = 0;

  function render() {
    document.getElementById("count").textContent = count;
    const body = document.getElementById("connections");
    body.replaceChildren();
    for (const c of live.values()) {
      const row = document.createElement("tr");
      cell(row, c.connectionId);
      cell(row, new Date(c.creationTime).toLocaleString());
      cell(row, c.data);
      body.appendChild(row);
    }
    const recent = document.getElementById("records");
    recent.replaceChildren();
    for (const r of records.slice(-50).reverse()) {
      const row = document.createElement("tr");
      cell(row, r.position, "num");
      cell(row, r.type);
      cell(row, r.connection.connectionId);
      cell(row, r.reason);
      if (r.defaultPrevented) cell(row, "prevented by " + text(r.preventedBy), "prevented");
      else cell(row, "applied");
      cell(row, r.count, "num");
      recent.appendChild(row);
    }
    drawChart();
  }

  function drawChart() {
    const canvas = document.getElementById("chart");
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (history.length < 2) return;
    const max = Math.max(1, ...history.map((p) => p.count));
    const first = history[0].t;
    const span = Math.max(1, history[history.length - 1].t - first);
    context.strokeStyle = "#2f6fed";
    context.lineWidth = 2;
    context.beginPath();
    history.forEach((point, index) => {
      const x = 10 + ((point.t - first) / span) * (canvas.width - 20);
      const y = canvas.height - 10 - (point.count / max) * (canvas.height - 20);
      if (index === 0) context.moveTo(x, y);
      else context.lineTo(x, y);
    });
    context.stroke();
    context.fillStyle = "#687084";
    context.fillText(String(max), 2, 12);
  }

  const stream = new EventSource("/v1/sessions/" + encodeURIComponent(sessionId) + "/stream");
  stream.addEventListener("connectionCreated", (message) => {
    const data = JSON.parse(message.data);
    if (data.snapshot) {
      live.set(data.connection.connectionId, data.connection);
      return;
    }
    onRecord(data);
  });
  stream.addEventListener("connectionDestroyed", (message) => onRecord(JSON.parse(message.data)));
  stream.addEventListener("sessionConnected", (message) => {
    const data = JSON.parse(message.data);
    count = data.count;
    document.getElementById("position").textContent = data.position;
    history.push({ t: Date.now(), count });
    render();
  });
  stream.onerror = () => setStatus("reconnecting…");
  stream.onopen = () => setStatus("live");

  function onRecord(record) {
    records.push(record);
    if (records.length > 500) records.shift();
    // The record's count says whether it changed the live set: a late create of a connection
    // destroyed before the snapshot, or a second create, leaves the count as it was.
    if (record.type === "connectionCreated" && record.count === count + 1) {
      live.set(record.connection.connectionId, record.connection);
    } else if (record.type === "connectionDestroyed" && record.count === count - 1) {
      live.delete(record.connection.connectionId);
    }
    count = record.count;
    document.getElementById("position").textContent = record.position;
    history.push({ t: record.recordedAt, count });
    if (history.length > 2000) history.shift();
    render();
  }
}
