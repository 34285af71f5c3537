"""The feedback dashboard: upload a CSV, pick its columns, watch each row scored and forgotten.

One static page and one script, both served by the API itself (no CDN, no build step). The
browser reads the CSV locally (any of a few encodings), sends each row to ``POST
/feedback`` with the token the user pastes, and follows the live log ``GET
/feedback/events`` (server-sent events, read with ``fetch`` so that the token travels in
a header, never in a URL). Each row shows its class probabilities and the round and model
that decided it; a row the model was not sure of is marked **review** with two buttons,
and a click sends the person's decision (``POST /feedback/<seq>/decision``, signed with
the name typed beside the token). A summary counts rows forgotten, kept and sent to review.
Every text a CSV holds reaches the page as ``textContent``, never as markup, and the
content security policy allows only this origin's script.
"""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

DASHBOARD_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Lethe · feedback dashboard</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.lead { color: #555; margin: 0 0 16px; }
fieldset { border: 1px solid #ccd; border-radius: 6px; margin: 0 0 12px; padding: 10px 14px; }
label { margin-right: 14px; }
input, select, button { font: inherit; }
button { padding: 4px 14px; }
#progress-box { margin: 12px 0; }
progress { width: 420px; height: 16px; vertical-align: middle; }
#status { margin-left: 10px; }
table { border-collapse: collapse; width: 100%; margin-top: 8px; }
th, td { border-bottom: 1px solid #e3e5ea; padding: 4px 6px; text-align: left;
         vertical-align: top; }
th { background: #f4f5f8; position: sticky; top: 0; }
td.text { max-width: 380px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
td.cid { font-family: monospace; font-size: 12px; }
.negative { color: #b3261e; } .neutral { color: #7a6400; } .positive { color: #1e7b34; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; }
.badge.ok { background: #d8f3dc; color: #1e7b34; }
.badge.bad { background: #fde2e1; color: #b3261e; }
.state-completed { color: #1e7b34; font-weight: 600; }
.state-failed, .error { color: #b3261e; }
td.probs, td.decision { font-size: 12px; white-space: nowrap; }
td.model { font-family: monospace; font-size: 12px; white-space: nowrap; }
tr[data-decision="review"] { background: #fff6d6; }
.decide { margin-right: 4px; padding: 0 8px; }
#summary span { margin-right: 14px; }
</style>
</head>
<body>
<h1>Lethe · feedback dashboard</h1>
<p class="lead">Each row's sentiment is decided by the federation's current global model;
rows the policy marks are forgotten by the node that holds them, with a certificate.</p>
<fieldset>
  <label>API token <input id="token" type="password" size="34" autocomplete="off"></label>
  <label>your name <input id="decider" size="16" autocomplete="name"
    title="signs the decisions you make on rows sent to review"></label>
  <label>CSV <input id="file" type="file" accept=".csv,text/csv"></label>
  <label>encoding <select id="encoding">
    <option value="utf-8">UTF-8</option>
    <option value="windows-1252">Windows-1252</option>
    <option value="iso-8859-1">Latin-1</option>
  </select></label>
</fieldset>
<fieldset id="columns" hidden>
  <label>id column <select id="id-col"></select></label>
  <label>text column <select id="text-col"></select></label>
  <span id="rows-found"></span>
  <button id="start" type="button">Score and forget</button>
</fieldset>
<div id="progress-box">
  <progress id="progress" value="0" max="1"></progress>
  <span id="status">choose a CSV</span>
</div>
<div id="summary">
  <span>forgotten <b id="sum-forget">0</b></span><span>kept <b id="sum-keep">0</b></span>
  <span>to review <b id="sum-review">0</b></span>
  <span>decided by a person <b id="sum-human">0</b></span>
</div>
<table>
  <thead><tr><th>#</th><th>record</th><th>text</th><th>sentiment</th>
  <th>probabilities %</th><th>decision</th><th>decided by</th><th>forget</th>
  <th>certificate</th></tr></thead>
  <tbody id="log"></tbody>
</table>
<script src="/dashboard.js"></script>
</body>
</html>
"""

DASHBOARD_JS = r"""'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  let table = null;          // {header: [...], rows: [[...], ...]}
  let rows = [];             // one entry per uploaded row: {tr, cells, requestId, state}
  const byRequest = new Map();
  let since = null;
  let streaming = false;

  function parseCsv(text) {
    const out = []; let row = []; let cell = ''; let quoted = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') { cell += '"'; i++; } else { quoted = false; }
        } else { cell += c; }
      } else if (c === '"') { quoted = true; }
      else if (c === ',') { row.push(cell); cell = ''; }
      else if (c === '\n' || c === '\r') {
        if (c === '\r' && text[i + 1] === '\n') i++;
        row.push(cell); cell = '';
        if (row.some((v) => v.trim() !== '')) out.push(row);
        row = [];
      } else { cell += c; }
    }
    if (cell !== '' || row.length) {
      row.push(cell);
      if (row.some((v) => v.trim() !== '')) out.push(row);
    }
    return out;
  }

  function guess(header, patterns) {
    for (const p of patterns) {
      const i = header.findIndex((h) => p.test(h.trim()));
      if (i >= 0) return i;
    }
    return 0;
  }

  function fill(select, header, chosen) {
    select.replaceChildren();
    header.forEach((h, i) => {
      const o = document.createElement('option');
      o.value = String(i); o.textContent = h; select.appendChild(o);
    });
    select.value = String(chosen);
  }

  async function load() {
    const file = $('file').files[0];
    if (!file) return;
    const buffer = await file.arrayBuffer();
    let text = new TextDecoder($('encoding').value).decode(buffer);
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    const all = parseCsv(text);
    if (all.length < 2) { setStatus('the CSV has no data rows', true); return; }
    table = { header: all[0], rows: all.slice(1) };
    fill($('id-col'), table.header,
      guess(table.header, [/^(record_?)?id$/i, /account_?(number|no|id)/i, /id$/i]));
    fill($('text-col'), table.header,
      guess(table.header, [/^text$/i, /feedback|comment|review|message|text/i]));
    $('rows-found').textContent = table.rows.length + ' rows';
    $('columns').hidden = false;
    setStatus(table.rows.length + ' rows ready');
  }

  function setStatus(message, error) {
    $('status').textContent = message;
    $('status').className = error ? 'error' : '';
  }

  function td(tr, cls) {
    const c = document.createElement('td');
    if (cls) c.className = cls;
    tr.appendChild(c);
    return c;
  }

  function progress() {
    const scored = rows.filter((r) => r.scored).length;
    const toForget = rows.filter((r) => r.requestId).length;
    const done = rows.filter((r) => r.requestId && r.state === 'completed').length;
    $('progress').max = Math.max(1, rows.length + toForget);
    $('progress').value = scored + done;
    setStatus(scored + ' / ' + rows.length + ' rows scored · ' + done + ' / ' + toForget +
      ' forgets completed');
    const n = (d) => rows.filter((r) => r.decision === d).length;
    const pct = (k) => k + (rows.length ? ' (' + Math.round(100 * k / rows.length) + ' %)' : '');
    $('sum-forget').textContent = pct(n('forget'));
    $('sum-keep').textContent = pct(n('keep'));
    $('sum-review').textContent = pct(n('review'));
    $('sum-human').textContent = String(rows.filter((r) => r.decidedBy &&
      r.decidedBy !== 'model').length);
  }

  function showDecision(row, body) {
    row.decision = body.decision;
    row.decidedBy = body.decided_by;
    row.tr.dataset.decision = body.decision;
    row.cells.decision.replaceChildren();
    row.cells.decision.textContent = body.decision;
    row.cells.decider.textContent = body.decided_by === 'model'
      ? 'model · round ' + body.model.round : body.decided_by;
    row.cells.decider.title = 'model ' + body.model.cid;
    if (body.decision === 'review') {
      row.cells.decision.textContent = 'review ';
      for (const choice of ['forget', 'keep']) {
        const b = document.createElement('button');
        b.type = 'button'; b.className = 'decide decide-' + choice; b.textContent = choice;
        b.addEventListener('click', () => decide(row, choice));
        row.cells.decision.appendChild(b);
      }
    }
    if (body.forget) {
      row.requestId = body.forget.request_id;
      byRequest.set(row.requestId, row);
      showForget(body.forget);
    }
  }

  async function decide(row, choice) {
    const token = $('token').value.trim();
    const decider = $('decider').value.trim();
    if (!decider) { setStatus('type your name first: it signs your decision', true); return; }
    row.cells.decision.querySelectorAll('button').forEach((b) => { b.disabled = true; });
    try {
      const response = await fetch('/feedback/' + row.seq + '/decision', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ decision: choice, decided_by: decider }),
      });
      const body = await response.json();
      if (!response.ok) {
        setStatus('decision on row ' + row.seq + ': ' + body.error, true);
        row.cells.decision.querySelectorAll('button').forEach((b) => { b.disabled = false; });
        return;
      }
      showDecision(row, body);
    } catch (err) {
      setStatus('decision: ' + err, true);
    }
    progress();
  }

  function showForget(event) {
    const row = byRequest.get(event.request_id);
    if (!row) return;
    row.state = event.state;
    row.cells.state.textContent = event.state + (event.reason ? ' (' + event.reason + ')' : '');
    row.cells.state.className = 'state-' + event.state;
    row.tr.dataset.state = event.state;
    if (event.certificate_cid) {
      row.cells.cid.replaceChildren();
      const code = document.createElement('span');
      code.className = 'cert'; code.textContent = event.certificate_cid;
      row.cells.cid.appendChild(code);
      if (event.certificate_verified !== undefined) {
        const badge = document.createElement('span');
        badge.className = 'badge ' + (event.certificate_verified ? 'ok' : 'bad');
        badge.textContent = event.certificate_verified ? '✓ verified' : '✗ does not verify';
        badge.title = event.certificate_detail || '';
        row.cells.cid.append(' ', badge);
      }
    }
    progress();
  }

  async function follow(token) {
    if (streaming) return;
    streaming = true;
    while (streaming) {
      try {
        const url = '/feedback/events' + (since === null ? '' : '?since=' + since);
        const response = await fetch(url, { headers: { Authorization: 'Bearer ' + token } });
        if (!response.ok) {
          setStatus('live log: HTTP ' + response.status, true);
          streaming = false;
          break;
        }
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
            let name = 'message'; let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) name = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (!data) continue;
            const event = JSON.parse(data);
            if (name === 'hello' && since === null) since = event.last_seq;
            else if (name === 'forget') showForget(event);
          }
        }
      } catch (err) { /* reconnect below */ }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  async function start() {
    const token = $('token').value.trim();
    if (!token) { setStatus('paste the API token first', true); return; }
    if (!table) return;
    $('start').disabled = true;
    const idAt = Number($('id-col').value); const textAt = Number($('text-col').value);
    rows = []; byRequest.clear(); $('log').replaceChildren();
    table.rows.forEach((cells, i) => {
      const tr = document.createElement('tr'); tr.className = 'row';
      td(tr).textContent = String(i + 1);
      td(tr, 'record').textContent = cells[idAt] || '';
      const t = td(tr, 'text'); t.textContent = cells[textAt] || ''; t.title = cells[textAt] || '';
      const row = { tr, id: (cells[idAt] || '').trim(), text: cells[textAt] || '', scored: false,
        requestId: null, state: null,
        seq: null, decision: null, decidedBy: null,
        cells: { sentiment: td(tr, 'sentiment'), probs: td(tr, 'probs'),
          decision: td(tr, 'decision'), decider: td(tr, 'model'),
          state: td(tr, 'state'), cid: td(tr, 'cid') } };
      rows.push(row); $('log').appendChild(tr);
    });
    progress();
    follow(token);
    while (since === null && streaming) await new Promise((r) => setTimeout(r, 50));
    for (const row of rows) {
      try {
        const response = await fetch('/feedback', {
          method: 'POST',
          headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
          body: JSON.stringify({ record_id: row.id, text: row.text }),
        });
        const body = await response.json();
        row.scored = true;
        if (!response.ok) {
          row.cells.decision.textContent = 'error ' + response.status + ': ' + body.error;
          row.cells.decision.className = 'error';
        } else {
          const s = body.sentiment;
          const p = Math.round(100 * s.probabilities[s.label]);
          row.seq = body.seq;
          row.cells.sentiment.textContent = s.label + ' ' + p + '%';
          row.cells.sentiment.className = 'sentiment ' + s.label;
          row.cells.probs.textContent = Object.entries(s.probabilities)
            .map(([k, x]) => k.slice(0, 3) + ' ' + Math.round(100 * x)).join(' · ');
          row.cells.probs.title = Object.entries(s.probabilities)
            .map(([k, x]) => k + ' ' + x.toFixed(3)).join(', ');
          showDecision(row, body);
        }
      } catch (err) {
        row.scored = true;
        row.cells.decision.textContent = 'error: ' + err;
        row.cells.decision.className = 'error';
      }
      progress();
    }
    $('start').disabled = false;
  }

  $('file').addEventListener('change', load);
  $('encoding').addEventListener('change', load);
  $('start').addEventListener('click', start);
})();
"""
