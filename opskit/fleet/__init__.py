"""The fleet: hosts and groups from inventories, `--limit`, and one step rolled out across many hosts."""
