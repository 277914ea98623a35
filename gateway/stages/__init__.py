"""Pipeline stages. Each is a callable `async (ctx) -> ASGIApp | None`: None lets the request go on,
a response ends it there (an answer from the cache, for instance); refusals raise errors."""
