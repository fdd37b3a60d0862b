"""Network probes from this machine: does a TCP port accept, does an HTTP endpoint answer as expected."""
