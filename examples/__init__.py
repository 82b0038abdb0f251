"""Example PhoenixQ handler modules (see examples/handlers.py)."""
