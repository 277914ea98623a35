"""batching package (front door: see DESIGN.md)."""
