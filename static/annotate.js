// The annotation page. Heartbeats while the page is visible and in use (the server credits active
// time only from them); drafts (text and chips) saved a moment after typing stops, every few
// seconds and when the page is hidden; the server answers each save with the text's suggested
// region chips and its word count, so one extractor and one word-count rule serve both. The live
// count below mirrors that rule between saves: a word is a run of non-space characters with at
// least one letter or digit. Mask opacity and flicker; synchronized zoom and pan of both images;
// the next task's images prefetched once half the minimum time has passed. Keyboard shortcuts
// (F flicker, + - 0 zoom) never fire while typing.
(function () {
  "use strict";
  var root = document.getElementById("task");
  if (!root) return;
  var task = root.dataset.task, csrf = root.dataset.csrf;
  var minSeconds = parseFloat(root.dataset.min), interval = parseFloat(root.dataset.heartbeat) * 1000;
  var maxWords = parseInt(root.dataset.maxWords, 10);
  var text = document.getElementById("text"), words = document.getElementById("words");
  var timer = document.getElementById("timer"), saved = document.getElementById("saved");
  var active = parseFloat(root.dataset.active) || 0, lastInput = Date.now();
  var IDLE_MS = 60000;

  function wordCount(s) {
    return s.split(/\s+/).filter(function (w) { return /[\p{L}\p{N}]/u.test(w); }).length;
  }
  function post(path, body) {
    return fetch("/annotate/" + task + "/" + path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    });
  }
  function showTime() {
    timer.textContent = "active " + Math.floor(active) + " s of " + Math.floor(minSeconds) + " s";
    timer.classList.toggle("done", active >= minSeconds);
  }
  function showWords() {
    var n = wordCount(text.value);
    words.textContent = n;
    document.getElementById("wordline").classList.toggle("error", n > maxWords);
  }

  // Region chips: suggestions follow the text; a chip the annotator clicked keeps their choice.
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#chips input[name=region]"));
  var manual = {};
  var suggested = {};
  boxes.forEach(function (b) {
    if (b.parentElement.classList.contains("suggested")) suggested[b.value] = true;
    b.addEventListener("change", function () { manual[b.value] = b.checked; dirty = true; scheduleSave(); });
  });
  function chosen() { return boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; }); }
  function applySuggestions(list) {
    var now = {}, changed = false;
    list.forEach(function (l) { now[l] = true; });
    boxes.forEach(function (b) {
      var l = b.value;
      b.parentElement.classList.toggle("suggested", !!now[l]);
      if (l in manual) return;
      if (now[l] && !suggested[l] && !b.checked) { b.checked = true; changed = true; }
      if (!now[l] && suggested[l] && b.checked) { b.checked = false; changed = true; }
    });
    suggested = now;
    if (changed) { dirty = true; scheduleSave(); } // the draft keeps the chips as shown
  }

  var dirty = false, saving = false, saveTimer = null;
  function saveDraft() {
    if (!dirty || saving) return;
    dirty = false; saving = true;
    post("draft", { text: text.value, regions: chosen() }).then(function (r) {
      if (!r.ok) { dirty = true; saved.textContent = r.status === 409 ? "this task is no longer yours: copy your text" : "draft not saved"; return null; }
      saved.textContent = "draft saved";
      return r.json();
    }).then(function (j) {
      if (j) { applySuggestions(j.suggested); }
    }).catch(function () { dirty = true; saved.textContent = "offline: draft not saved"; })
      .then(function () { saving = false; });
  }
  function scheduleSave() { clearTimeout(saveTimer); saveTimer = setTimeout(saveDraft, 700); }

  var prefetched = false;
  function prefetchNext() {
    if (prefetched || active < minSeconds / 2) return;
    prefetched = true;
    post("prefetch").then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
      if (j && j.images) j.images.forEach(function (u) { var im = new Image(); im.src = u; });
    }).catch(function () {});
  }
  function heartbeat() {
    if (document.visibilityState !== "visible" || Date.now() - lastInput > IDLE_MS) return;
    post("heartbeat").then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
      if (j) { active = j.active_seconds; showTime(); prefetchNext(); }
    }).catch(function () {});
  }
  ["mousemove", "keydown", "wheel", "pointerdown", "touchstart"].forEach(function (e) {
    document.addEventListener(e, function () { lastInput = Date.now(); }, { passive: true });
  });
  text.addEventListener("input", function () { showWords(); saved.textContent = ""; dirty = true; scheduleSave(); });
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") saveDraft(); });

  // Mask overlay.
  var opacity = document.getElementById("opacity"), mask = document.getElementById("mask");
  function setOpacity() { mask.style.opacity = opacity.value / 100; }
  opacity.addEventListener("input", setOpacity);
  var flickering = null;
  function flicker() {
    if (flickering) { clearInterval(flickering); flickering = null; setOpacity(); return; }
    flickering = setInterval(function () { mask.style.opacity = mask.style.opacity === "0" ? opacity.value / 100 : 0; }, 400);
  }
  document.getElementById("flicker").addEventListener("click", flicker);

  // Synchronized zoom and pan: one transform applied to both stages.
  var views = [document.getElementById("view-orig"), document.getElementById("view-forged")];
  var stages = views.map(function (v) { return v.querySelector(".stage"); });
  var zoom = { s: 1, x: 0, y: 0 };
  function clamp() {
    var w = views[0].clientWidth, h = views[0].clientHeight;
    zoom.s = Math.min(16, Math.max(1, zoom.s));
    zoom.x = Math.min(0, Math.max(w - w * zoom.s, zoom.x));
    zoom.y = Math.min(0, Math.max(h - h * zoom.s, zoom.y));
  }
  function applyZoom() {
    clamp();
    var t = "translate(" + zoom.x + "px," + zoom.y + "px) scale(" + zoom.s + ")";
    stages.forEach(function (s) { s.style.transform = t; });
    root.dataset.zoom = zoom.s.toFixed(3);
  }
  function zoomAt(factor, cx, cy) {
    var s = Math.min(16, Math.max(1, zoom.s * factor)), k = s / zoom.s;
    zoom.x = cx - (cx - zoom.x) * k; zoom.y = cy - (cy - zoom.y) * k; zoom.s = s;
    applyZoom();
  }
  function centre() { return [views[0].clientWidth / 2, views[0].clientHeight / 2]; }
  views.forEach(function (v) {
    v.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = v.getBoundingClientRect();
      zoomAt(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    var drag = null;
    v.addEventListener("pointerdown", function (e) { drag = [e.clientX, e.clientY]; v.setPointerCapture(e.pointerId); });
    v.addEventListener("pointermove", function (e) {
      if (!drag) return;
      zoom.x += e.clientX - drag[0]; zoom.y += e.clientY - drag[1]; drag = [e.clientX, e.clientY];
      applyZoom();
    });
    v.addEventListener("pointerup", function () { drag = null; });
    v.addEventListener("dblclick", function () { zoom = { s: 1, x: 0, y: 0 }; applyZoom(); });
  });
  document.getElementById("zoom-in").addEventListener("click", function () { var c = centre(); zoomAt(1.5, c[0], c[1]); });
  document.getElementById("zoom-out").addEventListener("click", function () { var c = centre(); zoomAt(1 / 1.5, c[0], c[1]); });
  document.getElementById("zoom-reset").addEventListener("click", function () { zoom = { s: 1, x: 0, y: 0 }; applyZoom(); });

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT" || t.isContentEditable)) return; // never while typing
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var c = centre();
    if (e.key === "f" || e.key === "F") flicker();
    else if (e.key === "+" || e.key === "=") zoomAt(1.5, c[0], c[1]);
    else if (e.key === "-") zoomAt(1 / 1.5, c[0], c[1]);
    else if (e.key === "0") { zoom = { s: 1, x: 0, y: 0 }; applyZoom(); }
  });

  // Model hint (assistance mode "hint"): offered once the draft has a word, fetched on request;
  // the model's mask replaces the overlay's source.
  var hintButton = document.getElementById("hint-button");
  if (hintButton) {
    var hintOut = document.getElementById("hint-out"), hintRegions = document.getElementById("hint-regions");
    var enableHint = function () { hintButton.disabled = wordCount(text.value) === 0; };
    text.addEventListener("input", enableHint);
    enableHint();
    hintButton.addEventListener("click", function () {
      var ask = function () {
        post("hint").then(function (r) {
          if (!r.ok) { saved.textContent = r.status === 409 ? "write (and let it save) a first draft before the hint" : "no hint for this task"; return null; }
          return r.json();
        }).then(function (j) {
          if (!j) return;
          hintRegions.textContent = j.regions.length ? j.regions.join(", ") : "(none)";
          hintOut.hidden = false;
          if (j.mask_url) { mask.src = j.mask_url; mask.dataset.suggested = "1"; }
        }).catch(function () { saved.textContent = "offline: no hint"; });
      };
      // the draft first, so the server sees the words the hint waits for
      post("draft", { text: text.value, regions: chosen() }).then(ask, ask);
    });
  }

  document.getElementById("submit-form").addEventListener("submit", function () { clearTimeout(saveTimer); });
  setOpacity(); showWords(); showTime(); applyZoom();
  heartbeat();
  setInterval(heartbeat, interval);
  setInterval(function () { saveDraft(); }, 4000);
})();
