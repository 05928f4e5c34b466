// The student page (/s/<token>): a live countdown to the timeslot end, and the lab's status polled every
// 10 s from /s/<token>/instances/<id> (no account, so no event stream). A 404/410 reloads the page, which
// then says the link is no longer valid. The consoles are static/js/console.js's (the token as the subprotocol).
(function () {
  "use strict";
  var main = document.querySelector("[data-student-poll]");
  if (!main) return;
  var countdown = main.querySelector("[data-student-countdown]");
  var end = Date.parse(countdown.getAttribute("data-end"));

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var left = Math.max(0, Math.floor((end - Date.now()) / 1000));
    var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    countdown.textContent = h + ":" + pad(m) + ":" + pad(s);
  }

  function show(state) {
    var badge = main.querySelector("[data-student-status]");
    if (badge.textContent !== state.status) {
      badge.textContent = state.status;
      badge.className = "badge status-" + state.status;
    }
    main.querySelector("[data-student-step]").textContent = state.step || "";
    var progress = main.querySelector("[data-student-progress]");
    if (state.nodes_total) {
      progress.max = state.nodes_total;
      progress.value = state.nodes_booted;
      progress.hidden = false;
    } else {
      progress.hidden = true;
    }
    end = Date.parse(state.timeslot_end);
    tick();
    // The consoles the page can open changed (the lab came up, or went down): reload to show them, unless a
    // console is open (it closes by itself at teardown).
    var consoles = main.querySelector("[data-console-names]");
    var names = (state.consoles || []).filter(function (c) { return c.browser; })
      .map(function (c) { return c.name + " "; }).join("");
    var open = Array.prototype.some.call(main.querySelectorAll("[data-console]"), function (box) { return box._console; });
    if (consoles && consoles.getAttribute("data-console-names") !== names && !open) window.location.reload();
  }

  var polls = 0;
  function poll() {
    if (++polls > 2000) return;  // about 5 h of polling: then a reload resumes it
    fetch(main.getAttribute("data-student-poll"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 404 || r.status === 410) { window.location.reload(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (state) { if (state) show(state); })
      .catch(function () {});
  }

  tick();
  setInterval(tick, 1000);
  setInterval(poll, 10000);
})();
