"""Launchers for real servers on loopback; each waits until it answers and stops its daemon in finally."""
