// Starts Swagger UI on /docs/ from a file, not an inline script, so the page's
// Content-Security-Policy can forbid inline scripts. The spec URL is the page's data-spec.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout",
    tryItOutEnabled: true,
    validatorUrl: null
  });
});
