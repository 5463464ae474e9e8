/* "I can answer this": the question bank's toggles, kept in this browser's localStorage
 * (no account, no server). Every checkbox with class ftlab-known and data-q="<label>" shows
 * and sets the same stored flag; every .ftlab-count[data-chapter] shows how many of that
 * page's questions are ticked ("*" counts all). Pages without toggles are left alone. */
(function () {
  "use strict";
  var KEY = "ftlab-known-v1";

  function load() {
    try {
      var v = JSON.parse(window.localStorage.getItem(KEY) || "{}");
      return v && typeof v === "object" ? v : {};
    } catch (e) {
      return {};
    }
  }

  function save(known) {
    try {
      window.localStorage.setItem(KEY, JSON.stringify(known));
    } catch (e) {
      /* storage disabled (private mode): the toggles still work for this visit */
    }
  }

  function refresh(known) {
    var boxes = document.querySelectorAll("input.ftlab-known");
    var byChapter = {};
    boxes.forEach(function (box) {
      box.checked = !!known[box.dataset.q];
      var ch = box.dataset.chapter;
      (byChapter[ch] = byChapter[ch] || {})[box.dataset.q] = true;
      (byChapter["*"] = byChapter["*"] || {})[box.dataset.q] = true;
    });
    document.querySelectorAll(".ftlab-count").forEach(function (el) {
      var labels = Object.keys(byChapter[el.dataset.chapter] || {});
      var done = labels.filter(function (q) { return known[q]; }).length;
      el.textContent = done + " / " + (el.dataset.total || labels.length);
      el.classList.toggle("ftlab-complete", labels.length > 0 && done === labels.length);
    });
  }

  function start() {
    var boxes = document.querySelectorAll("input.ftlab-known");
    if (!boxes.length) {
      return;
    }
    var known = load();
    boxes.forEach(function (box) {
      box.addEventListener("change", function () {
        known = load();
        if (box.checked) {
          known[box.dataset.q] = true;
        } else {
          delete known[box.dataset.q];
        }
        save(known);
        refresh(known);
      });
    });
    refresh(known);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
