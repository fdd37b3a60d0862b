"""Where opskit keeps its runs: one place per user, whatever the current directory.

A colleague who takes over on the same machine (`sudo -u` or the same login) runs `opskit status` from
anywhere and finds the run. Order: `--state-dir`, then `$OPSKIT_STATE_DIR`, then `$XDG_STATE_HOME/opskit`,
then `~/.local/state/opskit` (the XDG Base Directory default for state that outlives a session).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "OPSKIT_STATE_DIR"


def default_state_dir() -> Path:
    """$OPSKIT_STATE_DIR, else $XDG_STATE_HOME/opskit, else ~/.local/state/opskit (never the cwd)."""
    explicit = os.environ.get(ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and Path(xdg).is_absolute():  # the spec says a relative value is invalid: ignore it
        return Path(xdg) / "opskit"
    return Path.home() / ".local" / "state" / "opskit"
