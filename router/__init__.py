"""router package (front door: see DESIGN.md)."""
