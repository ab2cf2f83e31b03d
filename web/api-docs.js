// Swagger UI for the service's own OpenAPI document (a file, so the page needs no inline script).
"use strict";

window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true, // the API key typed under "Authorize" survives a reload
  validatorUrl: null, // no badge fetched from validator.swagger.io: the page talks to its own origin only
});
