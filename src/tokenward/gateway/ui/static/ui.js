// tokenward dashboard: draws the charts from the JSON the server put in the page (no inline
// scripts: the page's Content-Security-Policy allows only these files), again after each live swap.
(function () {
  "use strict";
  var charts = {};
  function read(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas || typeof Chart === "undefined") return;
    if (charts[id] && charts[id].canvas === canvas) {
      charts[id].data = config.data;
      charts[id].update("none");
      return;
    }
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(canvas, config);
  }
  function render() {
    var spend = read("data-spend");
    if (spend) {
      draw("chart-spend", {
        type: "bar",
        data: spend,
        options: { animation: false, scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } } }
      });
    }
    var util = read("data-util");
    if (util) {
      draw("chart-util", {
        type: "bar",
        data: { labels: util.labels, datasets: [{ label: "% of limit", data: util.data }] },
        options: { animation: false, indexAxis: "y", scales: { x: { min: 0, max: 100 } } }
      });
    }
    var top = read("data-top");
    if (top) {
      draw("chart-top", {
        type: "bar",
        data: { labels: top.labels, datasets: [{ label: "USD this month", data: top.data }] },
        options: { animation: false, indexAxis: "y" }
      });
    }
  }
  document.addEventListener("DOMContentLoaded", render);
  document.addEventListener("htmx:afterSwap", render);
})();
