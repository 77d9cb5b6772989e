"""Placeholder: this family's layers are being written."""
