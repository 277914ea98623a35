"""Switchyard gateway: the OpenAI-compatible HTTP surface and the request pipeline."""
