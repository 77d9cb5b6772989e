"""Placeholder: this family's seeds are being written."""
