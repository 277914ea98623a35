"""The Anthropic Messages wire surface: request schemas, errors in Anthropic's shape, and the pure
translations between Messages and chat completions (both ways, plain and streamed)."""
