"""Residual traffic on the old host: who still arrives through the bridge, and when it is safe to stop."""
