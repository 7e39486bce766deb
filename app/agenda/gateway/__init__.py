"""API gateway: the only public entry point (token checks, login rate limits, routing, OpenAPI)."""
