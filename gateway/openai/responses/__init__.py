"""The OpenAI Responses API: POST /v1/responses (native or translated to chat), stored responses."""
