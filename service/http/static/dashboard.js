// The dashboard: no framework, no chart library and no CDN, so it works on a machine with no
// internet. The charts are SVG drawn here.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function number(value) {
  return typeof value === "number" ? value.toLocaleString("en-US") : text(value);
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function setText(id, value) {
  document.getElementById(id).textContent = text(value);
}

function setStatus(message) {
  setText("status", message);
}

function sessionLink(sessionId) {
  const link = document.createElement("a");
  link.href = "/sessions/" + encodeURIComponent(sessionId);
  link.textContent = sessionId;
  link.title = sessionId;
  return link;
}

function emptyRow(body, columns, message) {
  const row = document.createElement("tr");
  cell(row, message, "muted").colSpan = columns;
  body.appendChild(row);
}

function clock(ms, seconds) {
  const options = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) options.second = "2-digit";
  return new Date(ms).toLocaleTimeString("en-GB", options);
}

// ---- SVG charts -------------------------------------------------------------------------

function node(tag, attributes, parent) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
  if (parent) parent.appendChild(element);
  return element;
}

function titled(element, title) {
  node("title", {}, element).textContent = title;
  return element;
}

// A round upper bound for the y axis, and its tick step: four steps of 1, 2, 2.5 or 5 times a
// power of ten (whole numbers: the charts count things).
function niceScale(max) {
  const top = Math.max(1, max);
  for (let power = 1; ; power *= 10) {
    for (const factor of power === 1 ? [1, 2, 5] : [1, 2, 2.5, 5]) {
      const step = factor * power;
      if (step * 4 >= top) return { max: step * 4, step };
    }
  }
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map(
  (s) => s * 1000,
);

// An SVG chart area: a time x axis from `from` to `to`, a y axis from 0 to at least `yMax`.
// Returns the scales and the group to draw the data in.
function frame(svg, from, to, yMax) {
  svg.replaceChildren();
  const width = 1000;
  const height = Number(svg.dataset.height || 220);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const left = 48;
  const right = 14;
  const top = 12;
  const bottom = 26;
  const scale = niceScale(yMax);
  const span = Math.max(1, to - from);
  const x = (t) => left + ((t - from) / span) * (width - left - right);
  const y = (v) => height - bottom - (v / scale.max) * (height - top - bottom);
  const axes = node("g", { class: "axes" }, svg);
  for (let v = 0; v <= scale.max; v += scale.step) {
    node("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: v ? "grid" : "baseline" }, axes);
    node("text", { x: left - 8, y: y(v) + 4, class: "tick", "text-anchor": "end" }, axes).textContent = number(v);
  }
  const step = TIME_STEPS.find((s) => span / s <= 7) || TIME_STEPS[TIME_STEPS.length - 1];
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    if (x(t) > width - right - 26) break; // its label would be cut at the edge
    node("line", { x1: x(t), x2: x(t), y1: height - bottom, y2: height - bottom + 4, class: "baseline" }, axes);
    node("text", { x: x(t), y: height - 8, class: "tick", "text-anchor": "middle" }, axes).textContent = clock(
      t,
      step < 60000,
    );
  }
  const plot = node("g", { class: "plot" }, svg);
  return { x, y, plot, left, right: width - right, top, bottom: height - bottom, width, height };
}

// ---- the front page ---------------------------------------------------------------------

// The session list: every active session, refreshed every second (no reload), and the
// overview of the chosen window (GET /v1/overview), every two seconds.
function startSessionList() {
  const params = new URLSearchParams(location.search);
  const minutes = Math.min(1440, Math.max(1, parseInt(params.get("minutes") || "60", 10) || 60));
  const choice = document.getElementById("window");
  if (![...choice.options].some((option) => Number(option.value) === minutes)) {
    const option = document.createElement("option");
    option.value = String(minutes);
    option.textContent = `last ${minutes} min`;
    choice.appendChild(option);
  }
  choice.value = String(minutes);
  choice.addEventListener("change", () => {
    const next = new URLSearchParams(location.search);
    next.set("minutes", choice.value);
    location.search = next.toString();
  });

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
        cell(row, "").appendChild(sessionLink(session.sessionId));
        const count = cell(row, session.count, "num");
        count.dataset.session = session.sessionId;
        rows.appendChild(row);
      }
      if (!sessions.length) emptyRow(rows, 2, "no active sessions yet");
      setText("sessions", sessions.length);
      setText("connections", sessions.reduce((n, s) => n + s.count, 0));
      setText("position", position || "–");
      setStatus("updated " + new Date().toLocaleTimeString());
    } catch (error) {
      setStatus("cannot reach the service: " + error);
    }
  }

  async function refreshOverview() {
    try {
      const response = await fetch(`/v1/overview?minutes=${minutes}&buckets=60`);
      if (!response.ok) throw new Error("overview: " + response.status);
      drawOverview(await response.json());
    } catch (error) {
      setStatus("cannot read the overview: " + error);
    }
  }

  refresh();
  refreshOverview();
  setInterval(refresh, 1000);
  setInterval(refreshOverview, 2000);
}

function drawOverview(overview) {
  const width = overview.bucketMs;
  const now = Date.now();
  const buckets = overview.buckets;
  // The last bucket is still filling: the rate is of the last one that is complete.
  const complete = buckets.filter((b) => b.start + width <= now);
  const last = complete.length ? complete[complete.length - 1] : buckets[buckets.length - 1];
  const rate = last ? last.records / (width / 1000) : 0;
  setText("rate", rate >= 10 ? Math.round(rate).toLocaleString("en-US") : rate.toFixed(1));
  setText("vetoes", number(overview.vetoes));
  setText("rejections", number(overview.rejections));
  setText("records", number(overview.records));
  setText("synthetic", number(overview.synthetic));
  const per = width >= 60000 ? `${Math.round(width / 60000)} min` : `${Math.round(width / 1000)} s`;
  for (const element of document.querySelectorAll(".bucket-width")) element.textContent = per;
  document.getElementById("overview").dataset.position = overview.position;

  drawConnections(overview);
  drawIngest(overview);
  drawTop(overview.topSessions);
  drawRejections(overview.rejectionsByCode, overview.rejections);
}

function drawConnections(overview) {
  const svg = document.getElementById("connections-chart");
  const end = Math.min(Date.now(), overview.until);
  const points = overview.buckets
    .map((b) => ({ t: Math.min(b.start + overview.bucketMs, end), v: b.connections }))
    .filter((p) => p.t > overview.since);
  const f = frame(svg, overview.since, overview.until, Math.max(...points.map((p) => p.v), 1));
  if (!points.length) return;
  const line = points.map((p, i) => `${i ? "L" : "M"}${f.x(p.t).toFixed(1)},${f.y(p.v).toFixed(1)}`).join("");
  const area = `${line}L${f.x(points[points.length - 1].t).toFixed(1)},${f.bottom}L${f.x(points[0].t).toFixed(1)},${f.bottom}Z`;
  node("path", { d: area, class: "area" }, f.plot);
  node("path", { d: line, class: "line" }, f.plot);
  for (const p of points) {
    titled(node("circle", { cx: f.x(p.t), cy: f.y(p.v), r: 2.5, class: "point" }, f.plot), `${clock(p.t)}: ${p.v}`);
  }
  svg.dataset.points = points.length;
}

function drawIngest(overview) {
  const svg = document.getElementById("ingest-chart");
  const buckets = overview.buckets;
  const most = Math.max(1, ...buckets.map((b) => Math.max(b.records, b.rejections)));
  const f = frame(svg, overview.since, overview.until, most);
  const slot = f.x(overview.since + overview.bucketMs) - f.x(overview.since);
  const bar = Math.max(1, slot * 0.72);
  for (const b of buckets) {
    const x = f.x(b.start) + (slot - bar) / 2;
    const when = `${clock(b.start)}–${clock(b.start + overview.bucketMs)}`;
    if (b.records) {
      const applied = b.records - b.vetoes - b.synthetic;
      let base = f.bottom;
      for (const [value, kind] of [
        [applied, "records"],
        [b.synthetic, "synthetic"],
        [b.vetoes, "vetoes"],
      ]) {
        if (!value) continue;
        const height = f.bottom - f.y(value);
        const label = `${when}: ${b.records} records, ${b.vetoes} vetoed, ${b.synthetic} synthetic`;
        titled(node("rect", { x, y: base - height, width: bar, height, class: "bar " + kind }, f.plot), label);
        base -= height;
      }
    }
    if (b.rejections) {
      const height = Math.max(2, f.bottom - f.y(b.rejections));
      const rect = node("rect", { x: x + bar * 0.3, y: f.bottom - height, width: bar * 0.4, height, class: "bar rejected" }, f.plot);
      titled(rect, `${when}: ${b.rejections} rejected`);
    }
  }
}

// A value in a table cell, after a bar as long as its share of `most`.
function meter(td, value, most, className) {
  const track = document.createElement("span");
  track.className = "track";
  const bar = document.createElement("span");
  bar.style.width = `${Math.round((value / Math.max(1, most)) * 100)}%`;
  track.appendChild(bar);
  const figure = document.createElement("b");
  figure.className = className;
  figure.textContent = number(value);
  td.append(track, figure);
}

function drawTop(sessions) {
  const body = document.getElementById("top");
  body.replaceChildren();
  const most = Math.max(1, ...sessions.map((s) => s.peak));
  for (const session of sessions) {
    const row = document.createElement("tr");
    row.dataset.session = session.sessionId;
    cell(row, "").appendChild(sessionLink(session.sessionId));
    meter(cell(row, "", "num bar-cell"), session.peak, most, "peak");
    cell(row, session.count, "num now");
    body.appendChild(row);
  }
  if (!sessions.length) emptyRow(body, 3, "no session has had a connection in this window");
}

function drawRejections(byCode, total) {
  const body = document.getElementById("rejections-by-code");
  body.replaceChildren();
  for (const [code, count] of Object.entries(byCode)) {
    const row = document.createElement("tr");
    row.dataset.code = code;
    cell(row, code, "code");
    meter(cell(row, "", "num bar-cell bad"), count, total, "count");
    body.appendChild(row);
  }
  if (!total) emptyRow(body, 2, "nothing rejected in this window");
}

// ---- a session's page -------------------------------------------------------------------

// One session: its history (GET /v1/sessions/{id}/history), drawn at once and extended from its
// live stream (snapshot, then every record); a slider over its records that shows the
// connections at that position; the recent records.
function startSession(sessionId) {
  setText("session-id", sessionId);
  document.title = sessionId + " · Connection Ledger";
  const path = "/v1/sessions/" + encodeURIComponent(sessionId);
  const live = new Map();
  const records = []; // the records streamed since the page opened, for the table
  let series = []; // {position, sequence, t, count, low, high}
  let marks = []; // {position, t, count, kind, title}
  let total = 0; // the session's records
  let loaded = false;
  const early = []; // records streamed before the history came
  let count = 0;
  let at = null; // null: live; else an index into `series`
  let shown = null; // the connections at `at`, once read
  let asked = 0;

  function kindOf(record) {
    if (record.defaultPrevented) return "vetoed";
    return record.origin || null;
  }

  function addMark(record, t) {
    const kind = kindOf(record);
    if (!kind) return;
    const connection = record.connectionId || (record.connection && record.connection.connectionId);
    const why = record.defaultPrevented ? `vetoed by ${text(record.preventedBy)}` : `appended by ${record.origin}`;
    marks.push({
      position: record.position,
      t,
      count: record.count,
      kind,
      title: `position ${record.position}: ${record.type} ${connection}, ${why}`,
    });
  }

  function extend(record) {
    const last = series.length ? series[series.length - 1].position : 0;
    if (record.position <= last) return;
    const t = record.recordedAt;
    series.push({ position: record.position, sequence: record.sequence, t, count: record.count, low: record.count, high: record.count });
    addMark(record, t);
    total += 1;
    if (series.length > 5000) {
      series.shift();
      if (at !== null) at = Math.max(0, at - 1);
    }
  }

  async function loadHistory() {
    const response = await fetch(path + "/history?points=600");
    if (!response.ok) throw new Error("history: " + response.status);
    const history = await response.json();
    series = history.points.map((p) => ({ ...p, t: p.recordedAt }));
    marks = [];
    for (const mark of history.marks) addMark(mark, mark.recordedAt);
    total = history.records;
    loaded = true;
    for (const record of early.splice(0)) extend(record);
    render();
  }

  function render() {
    setText("count", count);
    setText("records-total", number(total));
    setText("vetoed-total", number(marks.filter((m) => m.kind === "vetoed").length));
    setText("synthetic-total", number(marks.filter((m) => m.kind !== "vetoed").length));
    drawSlider();
    drawTable();
    drawRecent();
    drawChart();
  }

  function drawRecent() {
    const recent = document.getElementById("records");
    recent.replaceChildren();
    for (const r of records.slice(-50).reverse()) {
      const row = document.createElement("tr");
      cell(row, r.position, "num");
      cell(row, r.type);
      cell(row, r.connection.connectionId);
      cell(row, r.reason);
      if (r.defaultPrevented) cell(row, "prevented by " + text(r.preventedBy), "prevented");
      else if (r.origin) cell(row, r.origin, "synthetic");
      else cell(row, "applied");
      cell(row, r.count, "num");
      recent.appendChild(row);
    }
    if (!records.length) emptyRow(recent, 6, "no record since this page opened");
  }

  function drawTable() {
    const body = document.getElementById("connections");
    body.replaceChildren();
    let connections;
    if (at === null) {
      setText("connections-title", "Live connections");
      connections = [...live.values()];
    } else {
      const point = series[at];
      setText("connections-title", `Connections at position ${point.position}`);
      if (!shown || shown.position !== point.position) {
        emptyRow(body, 3, "reading…");
        return;
      }
      connections = shown.connections;
    }
    for (const c of connections) {
      const row = document.createElement("tr");
      row.dataset.connection = c.connectionId;
      cell(row, c.connectionId);
      cell(row, new Date(c.creationTime).toLocaleString());
      cell(row, c.data);
      body.appendChild(row);
    }
    if (!connections.length) emptyRow(body, 3, "no connections");
  }

  function drawSlider() {
    const slider = document.getElementById("slider");
    slider.max = String(Math.max(0, series.length - 1));
    slider.disabled = series.length < 2;
    slider.value = String(at === null ? series.length - 1 : at);
    const label = document.getElementById("slider-label");
    if (at === null || !series.length) {
      label.textContent = series.length ? `live · position ${series[series.length - 1].position}` : "live";
      label.className = "live";
    } else {
      const point = series[at];
      label.textContent = `position ${point.position} · ${new Date(point.t).toLocaleString()}`;
      label.className = "past";
    }
  }

  function drawChart() {
    const svg = document.getElementById("chart");
    const now = Date.now();
    if (!series.length) {
      frame(svg, now - 60000, now, 1);
      svg.dataset.points = 0;
      return;
    }
    const from = series.length > 1 ? series[0].t : series[0].t - 30000;
    const to = Math.max(series[series.length - 1].t + 1000, Math.min(now, series[series.length - 1].t + 3600000));
    const most = Math.max(...series.map((p) => p.high), ...marks.map((m) => m.count));
    const f = frame(svg, from, to, most);
    const xs = series.map((p) => f.x(p.t).toFixed(1));
    let d = `M${xs[0]},${f.y(series[0].count).toFixed(1)}`;
    for (let i = 1; i < series.length; i++) d += `H${xs[i]}V${f.y(series[i].count).toFixed(1)}`;
    d += `H${f.x(to).toFixed(1)}`;
    node("path", { d: `${d}V${f.bottom}H${xs[0]}Z`, class: "area" }, f.plot);
    for (const p of series) {
      if (p.low !== p.high) node("line", { x1: f.x(p.t), x2: f.x(p.t), y1: f.y(p.low), y2: f.y(p.high), class: "range" }, f.plot);
    }
    node("path", { d, class: "line" }, f.plot);
    if (series.length <= 200) {
      for (const p of series) {
        const dot = node("circle", { cx: f.x(p.t), cy: f.y(p.count), r: 2.6, class: "point" }, f.plot);
        dot.dataset.position = p.position;
        titled(dot, `position ${p.position}: ${p.count}`);
      }
    }
    for (const m of marks) {
      const x = f.x(m.t);
      const y = f.y(m.count);
      let shape;
      if (m.kind === "vetoed") shape = node("path", { d: `M${x - 5},${y - 5}L${x + 5},${y + 5}M${x - 5},${y + 5}L${x + 5},${y - 5}` }, f.plot);
      else if (m.kind === "expiry") shape = node("path", { d: `M${x},${y - 7}L${x + 7},${y}L${x},${y + 7}L${x - 7},${y}Z` }, f.plot);
      else shape = node("rect", { x: x - 5.5, y: y - 5.5, width: 11, height: 11 }, f.plot);
      shape.setAttribute("class", "mark " + m.kind);
      shape.dataset.position = m.position;
      titled(shape, m.title);
    }
    if (at !== null) {
      const p = series[at];
      node("line", { x1: f.x(p.t), x2: f.x(p.t), y1: f.top, y2: f.bottom, class: "cursor" }, f.plot);
      node("circle", { cx: f.x(p.t), cy: f.y(p.count), r: 5, class: "cursor-dot" }, f.plot);
    }
    svg.dataset.points = series.length;
  }

  // The connections at a position: time travel (`?at=`), or where the service does not travel
  // yet, the session's records up to it, folded here.
  async function connectionsAt(point) {
    const answer = await (await fetch(`${path}?at=${point.position}`)).json();
    if (answer.position === point.position) return answer.connections;
    const response = await fetch(`/v1/events?sessionId=${encodeURIComponent(sessionId)}&limit=${point.sequence}`);
    const set = new Map();
    let before = 0;
    for (const line of (await response.text()).split("\n")) {
      if (!line) continue;
      const record = JSON.parse(line);
      if (record.position > point.position) break;
      // The count says whether the record changed the set (a veto, a second create or a late
      // one leave it as it was).
      if (record.type === "connectionCreated" && record.count === before + 1) set.set(record.connection.connectionId, record.connection);
      else if (record.type === "connectionDestroyed" && record.count === before - 1) set.delete(record.connection.connectionId);
      before = record.count;
    }
    return [...set.values()];
  }

  let pending = null;
  document.getElementById("slider").addEventListener("input", (event) => {
    const index = Number(event.target.value);
    at = index >= series.length - 1 ? null : index;
    render();
    clearTimeout(pending);
    if (at === null) return;
    const point = series[at];
    const mine = ++asked;
    pending = setTimeout(async () => {
      try {
        const connections = await connectionsAt(point);
        if (mine !== asked) return;
        shown = { position: point.position, connections };
        drawTable();
      } catch (error) {
        setStatus("cannot read the connections at that position: " + error);
      }
    }, 120);
  });
  document.getElementById("live-button").addEventListener("click", () => {
    at = null;
    asked++;
    render();
  });

  const stream = new EventSource(path + "/stream");
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
    setText("position", data.position);
    render();
    loadHistory().catch((error) => setStatus("cannot read the history: " + error));
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
    setText("position", record.position);
    if (loaded) extend(record);
    else early.push(record);
    render();
  }

  // The line runs on to now while nothing happens.
  setInterval(() => {
    if (loaded) drawChart();
  }, 5000);
}
