"""`python -m opskit` is the same as the `opskit` command."""

from opskit.cli import main

if __name__ == "__main__":
    main()
