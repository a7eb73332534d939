"""HTTP adapters: the lean ASGI handler for inference routes and the Quart control app."""
