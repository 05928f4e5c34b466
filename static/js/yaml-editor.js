// The definition editor's topology field (templates/lablets/definition_form.html): a plain <textarea>
// inside [data-yaml-editor], given a line-number gutter. When the server reported an error at a line
// (data-error-line), that number is marked and the caret is put at the start of that line.
// No inline script (CSP 'self'): everything the page passes is in data attributes.
(function () {
  "use strict";

  function setUp(wrap) {
    var area = wrap.querySelector("textarea");
    if (!area) return;
    var gutter = document.createElement("pre");
    gutter.className = "yaml-gutter";
    gutter.setAttribute("aria-hidden", "true");
    wrap.insertBefore(gutter, area);
    var errorLine = parseInt(wrap.getAttribute("data-error-line") || "0", 10);
    var shown = 0;

    function number() {
      var lines = area.value.split("\n").length;
      if (lines === shown) return;
      shown = lines;
      gutter.textContent = "";
      for (var n = 1; n <= lines; n++) {
        var line = document.createElement("span");
        line.textContent = n + "\n";
        if (n === errorLine) line.className = "bad";
        gutter.appendChild(line);
      }
      gutter.appendChild(document.createTextNode("\n"));  // room for the textarea's scrollbar
      gutter.scrollTop = area.scrollTop;
    }

    area.addEventListener("input", function () { errorLine = 0; shown = 0; number(); });
    area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
    number();

    if (errorLine > 0) {
      var lines = area.value.split("\n");
      var offset = 0;
      for (var i = 0; i < errorLine - 1 && i < lines.length; i++) offset += lines[i].length + 1;
      area.focus();
      area.setSelectionRange(offset, offset);
      var height = parseFloat(window.getComputedStyle(area).lineHeight) || 18;
      area.scrollTop = Math.max(0, (errorLine - 4) * height);
      gutter.scrollTop = area.scrollTop;
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-yaml-editor]"), setUp);
})();
