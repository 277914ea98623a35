"""bench package (front door: see DESIGN.md)."""
