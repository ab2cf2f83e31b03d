// Swagger UI for the service's own OpenAPI document (a file, so the page needs no inline script).
"use strict";

window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true, // the API key typed under "Authorize" survives a reload
});
