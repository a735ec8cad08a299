// purgeq's status page: optional. Without it the page is complete; with
// it, <main> is refreshed in place every few seconds (no reload, the
// scroll position kept) and times are shown in the browser's own zone,
// with its offset.
(function () {
  "use strict";
  function pad(n) { return String(n).padStart(2, "0"); }
  function local(stamp) {
    var d = new Date(stamp);
    if (isNaN(d.getTime())) { return stamp; }
    var offset = -d.getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    offset = Math.abs(offset);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
      " (UTC" + sign + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60) + ")";
  }
  function zone() {
    var offset = -new Date().getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "-";
    offset = Math.abs(offset);
    return "UTC" + sign + pad(Math.floor(offset / 60)) + ":" + pad(offset % 60);
  }
  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      t.textContent = local(t.getAttribute("datetime"));
      t.title = t.getAttribute("datetime");
    });
    // Chart axes: HH:MM in the browser's zone, named in the caption.
    root.querySelectorAll("svg text[data-at]").forEach(function (t) {
      var d = new Date(t.getAttribute("data-at"));
      if (!isNaN(d.getTime())) { t.textContent = pad(d.getHours()) + ":" + pad(d.getMinutes()); }
    });
    root.querySelectorAll("figcaption .tz").forEach(function (t) { t.textContent = zone(); });
  }
  function refresh(main) {
    fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        // Not while someone is typing in the filter form.
        var typing = main.contains(document.activeElement) && document.activeElement !== document.body;
        if (next && !typing) {
          main.innerHTML = next.innerHTML;
          localize(main);
        }
      })
      .catch(function () { /* the daemon may be restarting: try again next time */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var main = document.getElementById("main");
    if (!main) { return; }
    localize(main);
    var seconds = Number(main.getAttribute("data-refresh")) || 0;
    if (seconds > 0) { window.setInterval(function () { refresh(main); }, seconds * 1000); }
  });
})();
