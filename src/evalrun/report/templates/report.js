(function () {
  "use strict";
  // The case browser. Data comes from the JSON blob; every piece of it is untrusted, so
  // the DOM is built with createElement + textContent only: no string is parsed as HTML.
  var blob = document.getElementById("case-data");
  var root = document.getElementById("case-browser");
  if (!blob || !root) { return; }
  var data = JSON.parse(blob.textContent);
  var cases = data.cases;
  var labels = data.status_labels;
  var pageSize = data.page_size || 50;
  var fKind = document.getElementById("f-kind");
  var fCohort = document.getElementById("f-cohort");
  var fStatus = document.getElementById("f-status");
  var fText = document.getElementById("f-text");
  var list = document.getElementById("case-list");
  var pagers = [document.getElementById("pager-top"), document.getElementById("pager-bottom")];
  var filtered = cases;
  var page = 0;
  var hay = null;
  var timer = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function haystack(c) {
    var parts = [c.id, c.kind, c.cohort, c.desc, c.vars].concat(c.tags);
    c.samples.forEach(function (s) {
      [s.b, s.c].forEach(function (x) {
        if (x) { parts.push(x.out || "", x.err || ""); }
      });
    });
    return parts.join("\n").toLowerCase();
  }

  function applyFilters() {
    var kind = fKind.value, cohort = fCohort.value, status = fStatus.value;
    var text = fText.value.trim().toLowerCase();
    if (text && hay === null) { hay = cases.map(haystack); }
    filtered = [];
    for (var i = 0; i < cases.length; i++) {
      var c = cases[i];
      if (kind && c.kind !== kind) { continue; }
      if (cohort && c.cohort !== cohort) { continue; }
      if (status === "errors" ? !c.err : (status && c.st !== status)) { continue; }
      if (text && hay[i].indexOf(text) < 0) { continue; }
      filtered.push(c);
    }
  }

  function renderSide(x, name) {
    var box = el("div", "side " + name);
    var h = el("h4", null, name);
    if (!x) {
      box.appendChild(h);
      box.appendChild(el("p", "muted", "(no call recorded)"));
      return box;
    }
    if (x.pass === true) { h.appendChild(el("span", "badge s-pass", "pass")); }
    else if (x.pass === false) { h.appendChild(el("span", "badge s-fail", "fail")); }
    box.appendChild(h);
    if (x.err) { box.appendChild(el("div", "err", "error " + x.err)); }
    if (x.out !== null && x.out !== undefined) {
      box.appendChild(el("pre", "out", x.out === "" ? "(empty output)" : x.out));
      if (x.cut > 0) { box.appendChild(el("div", "trunc", "(truncated: " + x.cut.toLocaleString("en-US") + " more characters)")); }
    } else if (!x.err) {
      box.appendChild(el("p", "muted", "(no text output)"));
    }
    if (x.ref) { box.appendChild(el("div", "small muted", "refusal field: " + x.ref)); }
    x.tools.forEach(function (t) {
      box.appendChild(el("div", "small", "tool call: " + t[0]));
      box.appendChild(el("pre", "tool", t[1]));
      if (t[2] > 0) { box.appendChild(el("div", "trunc", "(truncated: " + t[2].toLocaleString("en-US") + " more characters)")); }
    });
    if (x.checks.length) {
      var ul = el("ul", "checks");
      x.checks.forEach(function (ch) {
        var li = el("li", ch[1] ? "ok" : "bad", (ch[1] ? "\u2713 " : "\u2717 ") + ch[0]);
        if (ch[2]) { li.appendChild(el("span", "muted", " \u2014 " + ch[2])); }
        ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    if (x.judges && x.judges.length) {
      var jl = el("ul", "checks judges");
      x.judges.forEach(function (j) {
        var good = j[1] === "pass" || j[1] === "win";
        var bad = j[1] === "fail" || j[1] === "loss";
        var li = el("li", good ? "ok" : (bad ? "bad" : "muted"), "judge " + j[0] + ": " + j[1]);
        if (j[2]) { li.appendChild(el("span", "muted", " \u2014 " + j[2])); }
        if (j[3]) { li.appendChild(el("span", "small muted", " (" + j[3] + ")")); }
        jl.appendChild(li);
      });
      box.appendChild(jl);
    }
    var meta = el("div", "meta");
    x.meta.forEach(function (m) {
      var span = el("span");
      span.appendChild(el("b", null, m[0] + " "));
      span.appendChild(document.createTextNode(m[1]));
      meta.appendChild(span);
    });
    box.appendChild(meta);
    return box;
  }

  function renderCase(c) {
    var card = el("article", "case");
    card.id = "case-" + c.id;
    var head = el("div", "case-head");
    head.appendChild(el("h3", null, c.id));
    head.appendChild(el("span", "badge st-" + c.st, labels[c.st] || c.st));
    if (c.err && c.st !== "errors") { head.appendChild(el("span", "badge st-errors", "errors")); }
    head.appendChild(el("span", "badge", c.kind));
    head.appendChild(el("span", "badge", "cohort: " + c.cohort));
    c.tags.forEach(function (t) { head.appendChild(el("span", "badge", "#" + t)); });
    card.appendChild(head);
    if (c.desc) { card.appendChild(el("p", "desc muted", c.desc)); }
    if (c.vars) {
      var det = el("details");
      det.appendChild(el("summary", "small", "input"));
      det.appendChild(el("pre", null, c.vars));
      if (c.vars_cut > 0) { det.appendChild(el("div", "trunc", "(truncated: " + c.vars_cut.toLocaleString("en-US") + " more characters)")); }
      card.appendChild(det);
    }
    c.samples.forEach(function (s) {
      if (c.samples.length > 1) { card.appendChild(el("div", "sample-title", "sample " + s.n)); }
      var pair = el("div", "pair");
      pair.appendChild(renderSide(s.b, "baseline"));
      pair.appendChild(renderSide(s.c, "candidate"));
      card.appendChild(pair);
    });
    return card;
  }

  function pages() { return Math.max(1, Math.ceil(filtered.length / pageSize)); }

  function renderPager(box) {
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var prev = el("button", null, "\u2190 previous");
    prev.type = "button";
    prev.disabled = page <= 0;
    prev.addEventListener("click", function () { go(page - 1, true); });
    var next = el("button", null, "next \u2192");
    next.type = "button";
    next.disabled = page >= pages() - 1;
    next.addEventListener("click", function () { go(page + 1, true); });
    var first = page * pageSize;
    var info = filtered.length
      ? "cases " + (first + 1) + "\u2013" + Math.min(first + pageSize, filtered.length) + " of " + filtered.length +
        " (page " + (page + 1) + " of " + pages() + ")"
      : "no case matches the filters";
    box.appendChild(prev);
    box.appendChild(el("span", null, info));
    box.appendChild(next);
  }

  function render() {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    var frag = document.createDocumentFragment();
    filtered.slice(page * pageSize, (page + 1) * pageSize).forEach(function (c) { frag.appendChild(renderCase(c)); });
    list.appendChild(frag);
    pagers.forEach(renderPager);
  }

  function go(p, scroll) {
    page = Math.min(Math.max(0, p), pages() - 1);
    render();
    if (scroll) { root.scrollIntoView(); }
  }

  function refilter() {
    applyFilters();
    go(0, false);
  }

  function showHash() {
    var h = location.hash;
    if (h.indexOf("#case-") !== 0) { return; }
    var id;
    try { id = decodeURIComponent(h.slice(6)); } catch (e) { return; }
    var idx = -1;
    for (var i = 0; i < filtered.length; i++) { if (filtered[i].id === id) { idx = i; break; } }
    if (idx < 0) {
      // The case is filtered out: clear the filters so the link always lands.
      fKind.value = ""; fCohort.value = ""; fStatus.value = ""; fText.value = "";
      applyFilters();
      for (var j = 0; j < filtered.length; j++) { if (filtered[j].id === id) { idx = j; break; } }
      if (idx < 0) { return; }
    }
    go(Math.floor(idx / pageSize), false);
    var card = document.getElementById("case-" + id);
    if (card) {
      var old = list.querySelector(".case.hl");
      if (old) { old.classList.remove("hl"); }
      card.classList.add("hl");
      card.scrollIntoView();
    }
  }

  [fKind, fCohort, fStatus].forEach(function (s) { s.addEventListener("change", refilter); });
  fText.addEventListener("input", function () {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(refilter, 200);
  });
  document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); refilter(); });
  window.addEventListener("hashchange", showHash);
  document.addEventListener("click", function (e) {
    // Re-clicking the link of the current hash fires no hashchange: jump anyway.
    var a = e.target && e.target.closest ? e.target.closest("a") : null;
    if (a && a.getAttribute("href") === location.hash && location.hash.indexOf("#case-") === 0) {
      e.preventDefault();
      showHash();
    }
  });
  root.hidden = false;
  applyFilters();
  render();
  showHash();
})();
