"""cache package (front door: see DESIGN.md)."""
