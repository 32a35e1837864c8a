"""The HTTP API's routes, one module per concern; each module's `router(context)` builds its
routes, and `service.http.app.create_app` includes them in the order the OpenAPI document
lists them."""
