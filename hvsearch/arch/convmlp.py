"""Placeholder: this family's part configs are being written."""
