"""Pipeline stages. Each is a callable `async (ctx) -> Completion | None`: None lets the request go
on, a Completion answers it there (a cache hit, for instance); refusals raise errors."""
