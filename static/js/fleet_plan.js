/* The fleet plan page's chart (templates/dashboard/fleet_plan.html, docs/dashboard.md#fleet-plan).

   Demand in CPU cores per half hour (a filled line) against three capacity lines: running workers, running
   plus stopped and launching ones, and with the planner's planned launches. The data comes from the page's
   <script type="application/json" id="fleet-plan-data"> (Django's json_script: data, not script, so the
   production CSP's script-src 'self' holds); the table under the chart gives the same numbers.
   Chart.js is the project's own static file, static/vendor/chart.umd.min.js (see reports.js). */
(function () {
  "use strict";

  function line(label, data, colour, extra) {
    var base = { type: "line", label: label, data: data, borderColor: colour, backgroundColor: colour,
                 borderWidth: 2, pointRadius: 0, stepped: true };
    for (var key in extra) { base[key] = extra[key]; }
    return base;
  }

  function draw() {
    var source = document.getElementById("fleet-plan-data");
    var canvas = document.getElementById("fleet-plan-chart");
    if (!source || !canvas || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    new window.Chart(canvas, {
      data: {
        labels: data.labels,
        datasets: [
          line("Demand", data.demand, "#b00020", { fill: "origin", backgroundColor: "rgba(176,0,32,0.15)" }),
          line("Running", data.running, "#17623a", {}),
          line("+ stopped and launching", data.startable, "#1f4e99", { borderDash: [6, 3] }),
          line("+ planned launches", data.planned, "#8a5300", { borderDash: [2, 3] }),
        ],
      },
      options: {
        responsive: true, aspectRatio: 2.8, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom" } },
        scales: { y: { beginAtZero: true, title: { display: true, text: "CPU cores" } } },
      },
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
