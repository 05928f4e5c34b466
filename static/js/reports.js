/* The reports page's chart (templates/workers/reports.html, docs/dashboard.md#reports).

   Running hours per day as bars stacked per worker (left axis) and the fleet's utilisation in % per day as
   a line (right axis). The data comes from the page's <script type="application/json" id="report-chart-data">
   (Django's json_script: data, not script, so the production CSP's script-src 'self' holds); the tables
   under the chart give the same numbers to screen readers and for copying.

   Chart.js is the project's own static file, static/vendor/chart.umd.min.js: `make setup` installs it from
   package-lock.json with npm ci and copies it there (bin/vendor-static.sh); no CDN. It sets window.Chart.
*/
(function () {
  "use strict";

  var PALETTE = ["#1f4e99", "#17623a", "#8a5300", "#6b3fa0", "#0b7285", "#a61e4d", "#5c6b00", "#4a5568"];
  var LINE = "#b00020";

  function draw() {
    var source = document.getElementById("report-chart-data");
    var canvas = document.getElementById("report-chart");
    if (!source || !canvas || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);

    var datasets = data.workers.map(function (worker, i) {
      return {
        type: "bar", label: worker.name, data: worker.hours, stack: "hours", yAxisID: "hours", order: 2,
        backgroundColor: PALETTE[i % PALETTE.length],
      };
    });
    datasets.push({
      type: "line", label: "Utilisation %", data: data.utilisation, yAxisID: "percent", order: 1,
      borderColor: LINE, backgroundColor: LINE, borderWidth: 2, pointRadius: 3, spanGaps: false,
    });

    new window.Chart(canvas, {
      data: { labels: data.labels, datasets: datasets },
      options: {
        responsive: true,
        aspectRatio: 2.8,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom" } },
        scales: {
          x: { stacked: true },
          hours: {
            type: "linear", position: "left", stacked: true, beginAtZero: true,
            title: { display: true, text: "Running hours" },
          },
          percent: {
            type: "linear", position: "right", beginAtZero: true, suggestedMax: 100,
            title: { display: true, text: "Utilisation %" }, grid: { drawOnChartArea: false },
          },
        },
      },
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
