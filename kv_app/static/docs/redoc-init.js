// Starts ReDoc on /redoc from a file, not an inline script, so the page's
// Content-Security-Policy can forbid inline scripts (as /docs does). The spec URL is the
// container's data-spec.
window.addEventListener("load", function () {
  var root = document.getElementById("redoc-container");
  Redoc.init(root.dataset.spec, {}, root);
});
