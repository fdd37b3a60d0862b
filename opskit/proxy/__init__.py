"""The bridge: a temporary forwarder from the old host to the new one, with honest per-client counters."""
