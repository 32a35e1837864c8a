"""The HTTP edge: the REST API, Server-Sent Events, the dashboard, health and metrics."""
