// The admin console's live parts: every element with data-poll is refreshed from the JSON
// variant of its route (the same URL with Accept: application/json) about once a second, so
// progress bars, states, rates, ETAs, failures, a job's log and the live workers move without a
// reload. Rows of jobs started elsewhere are added to the jobs tables. Text only (textContent).
(function () {
  "use strict";
  var INTERVAL = 1000;

  function pct(j) {
    if (j.total > 0) return Math.min(100, (100 * ((j.done || 0) + (j.failed || 0))) / j.total);
    return j.state === "done" ? 100 : 0;
  }
  function set(root, sel, text) {
    var el = root.querySelector(sel);
    if (el && el.textContent !== String(text)) el.textContent = String(text);
  }
  function terminal(s) { return s === "done" || s === "failed" || s === "cancelled"; }
  function can(j, action) {
    switch (action) {
      case "cancel": return j.state === "queued" || j.state === "running" || j.state === "paused";
      case "pause": return j.state === "queued" || j.state === "running";
      case "resume": return j.state === "paused";
      case "retry": return j.state === "failed" || (terminal(j.state) && j.failed > 0);
    }
    return false;
  }
  function update(el, j) {
    var p = pct(j);
    el.dataset.state = j.state;
    set(el, ".state", j.state);
    var bar = el.querySelector("progress");
    if (bar) bar.value = Math.round(p);
    set(el, ".pct", Math.round(p));
    set(el, ".counts", (j.done || 0) + "/" + (j.total || 0));
    set(el, ".failed", j.failed || 0);
    set(el, ".rate", j.rate_per_s != null ? j.rate_per_s.toFixed(2) + "/s" : "");
    set(el, ".eta", j.eta_s != null ? Math.round(j.eta_s) + " s" : "");
    set(el, ".error", j.error || "");
    set(el, "#job-error", j.error || "");
    set(el, ".blocked", j.blocked || "");
    el.querySelectorAll("form.control").forEach(function (f) { f.hidden = !can(j, f.dataset.action); });
  }
  function row(tbody, j) {
    var tr = document.createElement("tr");
    tr.dataset.job = j.id;
    var cells = ["id", "kind", "state", "by", "created", "progress", "rate", "eta", "problem"];
    cells.forEach(function (c) { tr.appendChild(document.createElement("td")); });
    var a = document.createElement("a");
    a.href = "/admin/jobs/" + j.id;
    var code = document.createElement("code");
    code.textContent = j.id.slice(0, 8);
    a.appendChild(code);
    tr.cells[0].appendChild(a);
    tr.cells[1].textContent = j.kind;
    tr.cells[2].className = "state";
    tr.cells[3].textContent = j.started_by || "";
    tr.cells[4].textContent = (j.created_at || "").slice(0, 19).replace("T", " ");
    var bar = document.createElement("progress");
    bar.max = 100;
    tr.cells[5].appendChild(bar);
    var s = document.createElement("span"); s.className = "pct"; tr.cells[5].appendChild(document.createTextNode(" "));
    tr.cells[5].appendChild(s); tr.cells[5].appendChild(document.createTextNode(" % "));
    var c = document.createElement("span"); c.className = "counts hint"; tr.cells[5].appendChild(c);
    tr.cells[6].className = "num rate";
    tr.cells[7].className = "num eta";
    var e = document.createElement("span"); e.className = "error"; tr.cells[8].appendChild(e);
    var b = document.createElement("span"); b.className = "blocked"; tr.cells[8].appendChild(b);
    tbody.insertBefore(tr, tbody.firstChild);
    return tr;
  }
  function log(j) {
    var t = document.querySelector("#log tbody");
    if (!t || !j.events) return;
    if (t.rows.length === j.events.length) return;
    while (t.firstChild) t.removeChild(t.firstChild);
    j.events.forEach(function (ev) {
      var tr = document.createElement("tr");
      tr.className = ev.level || "";
      [(ev.at || "").slice(0, 19).replace("T", " "), ev.level || "", ev.message || ""].forEach(function (x) {
        var td = document.createElement("td"); td.textContent = x; tr.appendChild(td);
      });
      t.appendChild(tr);
    });
  }
  function workers(list) {
    var t = document.querySelector("#workers tbody");
    if (!t || !list) return;
    while (t.firstChild) t.removeChild(t.firstChild);
    list.forEach(function (w) {
      var tr = document.createElement("tr");
      [w.name, w.host, (w.devices || []).join(", "), w.current_job ? "job " + w.current_job : "idle",
       w.rate_per_s != null ? w.rate_per_s.toFixed(2) + "/s" : "", w.done || 0,
       (w.heartbeat_at || "").slice(0, 19).replace("T", " ")].forEach(function (x) {
        var td = document.createElement("td"); td.textContent = String(x); tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    var none = document.getElementById("no-workers");
    if (none) none.hidden = list.length > 0;
  }

  function poll(section) {
    var url = section.dataset.poll;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        if (data.id) {
          // one job (its page)
          update(section, data);
          log(data);
          var res = document.getElementById("result");
          if (res && data.result != null) {
            var txt = JSON.stringify(data.result, null, 2);
            if (res.textContent !== txt) res.textContent = txt;
          }
          return;
        }
        var tbody = section.querySelector("table.jobs tbody");
        var kinds = section.dataset.kind ? section.dataset.kind.split(",") : null;
        (data.jobs || []).forEach(function (j) {
          if (kinds && kinds.indexOf(j.kind) < 0) return;
          var el = section.querySelector('tr[data-job="' + j.id + '"]');
          if (!el && tbody) el = row(tbody, j);
          if (el) update(el, j);
        });
        workers(data.workers);
      })
      .catch(function () {})
      .then(function () { setTimeout(function () { poll(section); }, INTERVAL); });
  }

  document.querySelectorAll("[data-poll]").forEach(function (s) { setTimeout(function () { poll(s); }, INTERVAL / 2); });

  // a training job's page: its metrics and chart, every few seconds while the job is open
  function fixed(x, n) { return x == null || !isFinite(x) ? "" : Number(x).toFixed(n); }
  function train(panel) {
    var job = document.getElementById("job");
    fetch(panel.dataset.chart, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        set(panel, ".m-step", s.last_step != null ? s.last_step : "");
        set(panel, ".m-loss", fixed(s.last_loss, 4));
        set(panel, ".m-lr", s.last_lr != null ? Number(s.last_lr).toExponential(3) : "");
        set(panel, ".m-rate", fixed(s.last_images_per_s, 1));
        set(panel, ".m-plm", s.last_plm != null ? fixed(100 * s.last_plm, 2) : "");
        set(panel, ".m-best", s.best_plm != null ? fixed(100 * s.best_plm, 2) : "");
        // stage 2: the loss's parts and CIDEr + BLEU-4
        set(panel, ".m-lm", fixed(s.last_lm_loss, 4));
        set(panel, ".m-mask", fixed(s.last_mask_loss, 4));
        var v = s.last_score || {};
        set(panel, ".m-cider", fixed(v.cider, 4));
        set(panel, ".m-bleu", fixed(v.bleu4, 4));
        set(panel, ".m-score", fixed(v.score, 4));
        set(panel, ".m-best-score", fixed(s.best_score, 4));
        var img = document.getElementById("train-chart");
        if (img) img.src = panel.dataset.chart + "?t=" + Date.now();
      })
      .catch(function () {})
      .then(function () {
        if (job && terminal(job.dataset.state) && panel.dataset.final) return;
        if (job && terminal(job.dataset.state)) panel.dataset.final = "1";
        setTimeout(function () { train(panel); }, 4 * INTERVAL);
      });
  }
  var tp = document.getElementById("train-panel");
  if (tp) setTimeout(function () { train(tp); }, 2 * INTERVAL);
})();
