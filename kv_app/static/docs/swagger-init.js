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
    // Not tryItOutEnabled: each operation shows the 'Try it out' button Swagger users
    // look for (with it on, the forms open at once and the button says 'Cancel').
    displayRequestDuration: true,
    validatorUrl: null
  });
});
