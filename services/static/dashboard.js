// Optional: counts down the "time left" cells each second. Without JavaScript the page still shows
// every number (as of rendering) and refreshes itself through its meta refresh.
(function () {
  "use strict";
  function human(seconds) {
    var sign = seconds < 0 ? "-" : "";
    var s = Math.abs(Math.round(seconds));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return sign + d + "d " + h + "h";
    if (h > 0) return sign + h + "h " + String(m).padStart(2, "0") + "m";
    if (m > 0) return sign + m + "m " + String(s % 60).padStart(2, "0") + "s";
    return sign + s + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (cell) {
      var left = (Date.parse(cell.getAttribute("data-due")) - now) / 1000;
      cell.textContent = left < 0 ? human(left) + " overdue" : human(left);
      var row = cell.closest("tr");
      if (row) row.classList.toggle("overdue", left < 0);
      cell.classList.toggle("soon", left >= 0 && left < 600);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
})();
