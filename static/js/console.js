// Browser consoles of a running instance (docs/consoles.md): each [data-console="<ws path>"] gets a button that
// opens an xterm.js terminal connected over a WebSocket to /ws/lablet-instances/<id>/consoles/<name>, which
// LabManager proxies to the device's console port. Binary frames are the device's bytes; text frames are
// control messages ({"type": "error"|"closed", "detail"}) shown in the terminal before the socket closes.
// Authentication: the dashboard's session cookie; inside [data-console-bearer="<token>"] (the student page) the
// token goes as the subprotocol labmanager.bearer.<token>, offered with labmanager.v1 (never in the URL).
(function () {
  "use strict";

  function open(box) {
    var button = box.querySelector("[data-console-open]");
    var screen = box.querySelector("[data-console-screen]");
    var status = box.querySelector("[data-console-status]");
    var term = new window.Terminal({convertEol: false, cursorBlink: true, fontSize: 14, rows: 20});
    var fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    screen.hidden = false;
    term.open(screen);
    fit.fit();
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var holder = box.closest("[data-console-bearer]");
    var bearer = holder ? holder.getAttribute("data-console-bearer") : "";
    var url = scheme + window.location.host + box.getAttribute("data-console");
    var socket = bearer ? new WebSocket(url, ["labmanager.v1", "labmanager.bearer." + bearer]) : new WebSocket(url);
    socket.binaryType = "arraybuffer";
    button.disabled = true;
    status.textContent = "connecting";
    socket.onopen = function () { status.textContent = "connected"; term.focus(); };
    socket.onmessage = function (event) {
      if (typeof event.data === "string") {
        var message = JSON.parse(event.data);
        term.write("\r\n\x1b[33m[" + message.detail + "]\x1b[0m\r\n");
      } else {
        term.write(new Uint8Array(event.data));
      }
    };
    socket.onclose = function (event) {
      status.textContent = "closed (" + event.code + ")";
      button.disabled = false;
      button.textContent = "Reconnect";
      box._console = null;
    };
    term.onData(function (data) { if (socket.readyState === WebSocket.OPEN) socket.send(data); });
    window.addEventListener("resize", function () { fit.fit(); });
    box._console = {term: term, socket: socket};
  }

  document.querySelectorAll("[data-console]").forEach(function (box) {
    box.querySelector("[data-console-open]").addEventListener("click", function () {
      var screen = box.querySelector("[data-console-screen]");
      if (box._console) return;
      screen.textContent = "";
      open(box);
    });
  });
})();
