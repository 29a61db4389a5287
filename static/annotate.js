// The annotation page: heartbeats while visible and in use, drafts saved every few seconds and
// when the page is hidden, a live word count (same rule as the server: a word is a run of
// non-space characters with at least one letter or digit), mask opacity and flicker.
(function () {
  "use strict";
  var root = document.getElementById("task");
  if (!root) return;
  var task = root.dataset.task, csrf = root.dataset.csrf;
  var minSeconds = parseFloat(root.dataset.min), interval = parseFloat(root.dataset.heartbeat) * 1000;
  var maxWords = parseInt(root.dataset.maxWords, 10);
  var text = document.getElementById("text"), words = document.getElementById("words");
  var timer = document.getElementById("timer"), saved = document.getElementById("saved");
  var active = parseFloat(root.dataset.active) || 0, lastInput = Date.now(), lastSaved = text.value;
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
    words.parentElement.classList.toggle("error", n > maxWords);
  }
  function heartbeat() {
    if (document.visibilityState !== "visible" || Date.now() - lastInput > IDLE_MS) return;
    post("heartbeat").then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
      if (j) { active = j.active_seconds; showTime(); }
    }).catch(function () {});
  }
  function saveDraft() {
    if (text.value === lastSaved) return;
    var v = text.value;
    post("draft", { text: v }).then(function (r) { if (r.ok) { lastSaved = v; saved.textContent = "draft saved"; } });
  }
  ["mousemove", "keydown", "wheel", "pointerdown"].forEach(function (e) {
    document.addEventListener(e, function () { lastInput = Date.now(); }, { passive: true });
  });
  text.addEventListener("input", function () { showWords(); saved.textContent = ""; });
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") saveDraft(); });
  var opacity = document.getElementById("opacity"), mask = document.getElementById("mask");
  function setOpacity() { mask.style.opacity = opacity.value / 100; }
  opacity.addEventListener("input", setOpacity);
  var flickering = null;
  function flicker() {
    if (flickering) { clearInterval(flickering); flickering = null; setOpacity(); return; }
    flickering = setInterval(function () { mask.style.opacity = mask.style.opacity === "0" ? opacity.value / 100 : 0; }, 400);
  }
  document.getElementById("flicker").addEventListener("click", flicker);
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.tagName === "SELECT")) return; // never while typing
    if (e.key === "f" || e.key === "F") flicker();
  });
  setOpacity(); showWords(); showTime();
  heartbeat();
  setInterval(heartbeat, interval);
  setInterval(saveDraft, 4000);
})();
