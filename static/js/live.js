// LabManager live updates: one EventSource on /api/events/stream (the session cookie authenticates it).
// Elements opt in with data attributes:
//   data-live-instance="<inst id>"  a status badge, set from lablet_instance_status events' metadata.to
//   data-live-worker="<wkr id>"     a worker status badge, from worker_status events (worker.<state>)
//   data-live-step="<inst id>"      an instance's progress text (metadata.step), when the event carries one
//   data-live-cml="<wkr id>"        a worker's CML status, from worker.cml_status_changed (metadata.after)
//   data-live-feed / data-live-history="<inst id>"  an event list: new events are prepended
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

  function setBadge(el, status) {
    if (!status || el.textContent === status) return;
    el.className = el.className.replace(/\bstatus-\S+/g, "").trim() + " status-" + status + " flash";
    el.textContent = status;
    window.setTimeout(function () { el.classList.remove("flash"); }, 1500);
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
    if (meta.step !== undefined) each('[data-live-step="' + id + '"]', function (el) { el.textContent = meta.step; });
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
    each("[data-live-feed]", function (el) { addEvent(el, data); });
  }

  function onOther(event) {
    each("[data-live-feed]", function (el) { addEvent(el, JSON.parse(event.data)); });
  }

  var source = new EventSource("/api/events/stream");
  source.addEventListener("open", function () { setIndicator(true); });
  source.addEventListener("error", function () { setIndicator(false); });
  source.addEventListener("lablet_instance_status", onInstance);
  source.addEventListener("worker_status", onWorker);
  source.addEventListener("session_status", onOther);
  source.addEventListener("audit", onOther);
  window.labmanagerLive = source;  // for tests and the console

  // Forms that need a confirmation (fleet start/stop/drain, terminate) carry data-confirm.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
})();
