"""transformer_lib."""
