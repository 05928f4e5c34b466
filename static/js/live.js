// LabManager live updates: one EventSource on /api/events/stream (the session cookie authenticates it).
// Elements opt in with data attributes:
//   data-live-instance="<inst id>"  a status badge, set from lablet_instance_status events' metadata.to
//   data-live-worker="<wkr id>"     a worker status badge, from worker_status events (worker.<state>)
//   data-live-step="<inst id>"      an instance's progress text (metadata.text, else metadata.step); a transition clears it
//   data-live-progress="<inst id>"  a <progress> of nodes booted (metadata.nodes_booted/nodes_total), hidden otherwise
//   data-live-cml="<wkr id>"        a worker's CML status, from worker.cml_status_changed (metadata.after)
//   data-live-bars="<wkr id>"       a worker's load, from worker.load_changed: inside it, <meter data-bar="<key>">
//                                   takes metadata[key], [data-bar-text="{a}/{b} cores"] is filled from metadata,
//                                   [data-bar-row="<key>"] is shown when metadata[key] is not null
//   data-live-feed / data-live-history="<inst id>"  an event list: new events are prepended
//   data-live-refresh="<event name>"  (with an id) re-rendered by the server and swapped in on such events
// EventSource reconnects by itself and sends Last-Event-ID, so the server replays what was missed.
(function () {
  "use strict";
  if (!window.EventSource) return;
  var indicator = document.querySelector("[data-live-indicator]");
  var MAX_FEED = 20;

  function setIndicator(on) {
    if (!indicator) return;
    indicator.textContent = on ? "live" : "reconnecting";
    indicator.classList.toggle("on", on);
  }

  function setBadge(el, status) {  // an HTML badge, or an SVG <tspan> (the timeline): class as an attribute
    if (!status || el.textContent === status) return;
    var classes = (el.getAttribute("class") || "").replace(/\bstatus-\S+/g, "").trim();
    el.setAttribute("class", classes + " status-" + status + " flash");
    el.textContent = status;
    window.setTimeout(function () { el.classList.remove("flash"); }, 1500);
  }

  function setProgress(el, meta) {
    var counted = meta.nodes_total !== undefined && meta.nodes_total !== null;
    if (counted) { el.max = Math.max(1, meta.nodes_total); el.value = meta.nodes_booted || 0; }
    el.hidden = !counted;
  }

  function setBars(box, meta) {
    Array.prototype.forEach.call(box.querySelectorAll("[data-bar]"), function (meter) {
      var value = meta[meter.getAttribute("data-bar")];
      if (value !== undefined && value !== null) meter.value = value;
    });
    Array.prototype.forEach.call(box.querySelectorAll("[data-bar-text]"), function (el) {
      el.textContent = el.getAttribute("data-bar-text").replace(/\{(\w+)\}/g, function (all, key) {
        return meta[key] === undefined || meta[key] === null ? "?" : meta[key];
      });
    });
    Array.prototype.forEach.call(box.querySelectorAll("[data-bar-row]"), function (row) {
      var value = meta[row.getAttribute("data-bar-row")];
      row.hidden = value === undefined || value === null;
    });
  }

  function each(selector, fn) { Array.prototype.forEach.call(document.querySelectorAll(selector), fn); }

  // The overview's feed shows the newest first; an instance's history reads in order, oldest first.
  function addEvent(list, data) {
    var empty = list.querySelector(".empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    var time = document.createElement("time");
    time.dateTime = data.timestamp;
    time.textContent = new Date(data.timestamp).toLocaleTimeString();
    item.appendChild(time);
    item.appendChild(document.createTextNode(" " + data.event_type + " "));
    var who = document.createElement("span");
    who.className = "muted";
    who.textContent = data.resource ? data.resource.id : "";
    item.appendChild(who);
    var text = data.metadata && data.metadata.text;  // progress: "nodes booting 3/5"
    if (text) item.appendChild(document.createTextNode(" — " + text));
    if (list.hasAttribute("data-live-history")) {
      list.appendChild(item);
    } else {
      list.insertBefore(item, list.firstChild);
      while (list.children.length > MAX_FEED) list.removeChild(list.lastChild);
    }
  }

  function onInstance(event) {
    var data = JSON.parse(event.data);
    var id = data.resource && data.resource.id;
    var meta = data.metadata || {};
    if (meta.to) each('[data-live-instance="' + id + '"]', function (el) { setBadge(el, meta.to); });
    var step = meta.text !== undefined ? meta.text : meta.step;
    if (step === undefined && meta.to) step = "";  // a transition ends the previous state's progress
    if (step !== undefined) {
      each('[data-live-step="' + id + '"]', function (el) { el.textContent = step; });
      each('[data-live-progress="' + id + '"]', function (el) { setProgress(el, meta); });
    }
    each('[data-live-history="' + id + '"]', function (el) { addEvent(el, data); });
    each("[data-live-feed]", function (el) { addEvent(el, data); });
  }

  function onWorker(event) {
    var data = JSON.parse(event.data);
    var id = data.resource && data.resource.id;
    var meta = data.metadata || {};
    var state = meta.to || null;
    if (state) each('[data-live-worker="' + id + '"]', function (el) { setBadge(el, state); });
    var cml = meta.after && meta.after.cml_service_status;  // worker.cml_status_changed
    if (cml) each('[data-live-cml="' + id + '"]', function (el) { el.textContent = cml; });
    if (data.event_type === "worker.load_changed") each('[data-live-bars="' + id + '"]', function (el) { setBars(el, meta); });
    each("[data-live-feed]", function (el) { addEvent(el, data); });
  }

  function onOther(event) {
    each("[data-live-feed]", function (el) { addEvent(el, JSON.parse(event.data)); });
  }

  // data-live-refresh="<SSE event name> ..." on an element with an id: when such an event arrives, the
  // element is rendered again by the server (the page's own URL, fetched in the background; at most once
  // a second) and swapped in place: no reload. The sessions page's queues use it (positions move for
  // everyone behind a session that starts or ends).
  var refreshing = {};
  function refresh(el) {
    var id = el.id;
    if (!id || refreshing[id]) return;
    refreshing[id] = true;
    window.setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live-Refresh": id } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          refreshing[id] = false;
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
          var current = document.getElementById(id);
          if (fresh && current) {
            current.innerHTML = fresh.innerHTML;
            current.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () { refreshing[id] = false; });
    }, 1000);
  }
  function refreshOn(name) {
    return function () { each('[data-live-refresh~="' + name + '"]', refresh); };
  }

  var source = new EventSource("/api/events/stream");
  source.addEventListener("open", function () { setIndicator(true); });
  source.addEventListener("error", function () { setIndicator(false); });
  source.addEventListener("lablet_instance_status", onInstance);
  source.addEventListener("worker_status", onWorker);
  source.addEventListener("session_status", onOther);
  source.addEventListener("session_status", refreshOn("session_status"));
  source.addEventListener("audit", onOther);
  window.labmanagerLive = source;  // for tests and the console

  // Forms that need a confirmation (fleet start/stop/drain, terminate) carry data-confirm.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
