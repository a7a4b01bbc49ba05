// Reloads a page that shows work in progress (an export being built), every data-reload
// seconds. Only a convenience: without JavaScript the page has a reload link.
"use strict";
(function () {
  var marked = document.querySelector("[data-reload]");
  if (!marked) return;
  var seconds = Math.max(1, parseInt(marked.getAttribute("data-reload"), 10) || 2);
  window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
})();
