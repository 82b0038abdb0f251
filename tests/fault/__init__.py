"""The fault suite: real processes killed, stopped and corrupted (see checker.py)."""
