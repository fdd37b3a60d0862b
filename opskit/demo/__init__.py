"""The rehearsal on one machine: a DNS server, an old and a new service, a fleet of clients, all on loopback."""
