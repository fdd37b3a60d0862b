"""`notify:`: tell people when a gate starts waiting, a step fails, and the run ends.

A gate that waits after an hour's countdown must not wait silently at 3 a.m. A webhook gets a POST of
`{"text": "..."}` (the shape Slack and Mattermost incoming webhooks accept); a command gets the message on
stdin and in $OPSKIT_MESSAGE, with $OPSKIT_EVENT and $OPSKIT_RUN_ID, and runs as a local `run:` step does:
at its timeout its whole process tree is stopped. Messages are masked like the journal.
A notification that fails never fails the run: it is counted in the journal and shown as a warning.

    notify:
      - webhook: "{{ chat_webhook }}"
      - command: "mail -s 'opskit night' oncall@example.net"
        on: [gate, run_finished]
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

from opskit import durations
from opskit.errors import RunbookInvalid
from opskit.runbook.model import NotifyTarget
from opskit.runbook.shell import render_command, secret_env_name
from opskit.runbook.templates import TemplateProblem, render
from opskit.runbook.yamlnodes import Y
from opskit.transport.local import LocalTransport

TRIGGERS = ("gate", "step_failed", "run_finished")
FIELDS = ("webhook", "command", "on", "timeout")


def parse_notify(y: Y | None, problems: list[RunbookInvalid]) -> tuple[NotifyTarget, ...]:
    """`notify:` as a mapping or a list of them; each problem at its FILE:LINE:COL."""
    if y is None or y.value is None:
        return ()
    items = y.value if y.is_list else [y]
    return tuple(t for item in items if (t := _target(item, problems)) is not None)


def _target(y: Y, problems: list[RunbookInvalid]) -> NotifyTarget | None:
    if not y.is_map:
        problems.append(
            RunbookInvalid(y.loc, "notify: each entry is a mapping with webhook: or command:")
        )
        return None
    fields: dict[str, Y] = dict(y.value)
    for key, value in fields.items():
        if key not in FIELDS:
            problems.append(RunbookInvalid(value.key_loc or value.loc,
                                           f"unknown field '{key}' in notify (allowed: {', '.join(FIELDS)})"))  # fmt: skip
    webhook, command = _text(fields.get("webhook")), _text(fields.get("command"))
    if (webhook is None) == (command is None):
        problems.append(
            RunbookInvalid(y.loc, "notify: give exactly one of webhook: or command: per entry")
        )
        return None
    if webhook and "{{" not in webhook and not webhook.startswith(("http://", "https://")):
        where = fields["webhook"].loc
        problems.append(
            RunbookInvalid(where, f"notify.webhook: expected an http(s) URL, got {webhook!r}")
        )
    on = TRIGGERS
    if "on" in fields:
        raw = fields["on"].plain()
        on = tuple(raw) if isinstance(raw, list) else (str(raw),)
        for trigger in on:
            if trigger not in TRIGGERS:
                problems.append(RunbookInvalid(fields["on"].loc,
                                               f"notify.on: unknown event {trigger!r} (events: {', '.join(TRIGGERS)})"))  # fmt: skip
    timeout_s = 10.0
    if "timeout" in fields:
        try:
            timeout_s = durations.parse_seconds(fields["timeout"].value)
        except durations.DurationError as exc:
            problems.append(RunbookInvalid(fields["timeout"].loc, f"notify.timeout: {exc}"))
    return NotifyTarget(webhook=webhook, command=command, on=tuple(str(t) for t in on),
                        timeout_s=timeout_s, loc=y.loc)  # fmt: skip


def _text(y: Y | None) -> str | None:
    return None if y is None or y.value is None else str(y.value)


def notify(session: Any, trigger: str, message: str) -> int:
    """Send `message` to every target listening for `trigger`; the number that failed (never raises)."""
    targets = [t for t in session.runbook.notify if trigger in t.on]
    failed = 0
    text = session.masker.text(f"opskit {session.runbook.name} ({session.run_id}): {message}")
    for target in targets:
        kind = "webhook" if target.webhook else "command"
        try:
            _send(target, session, trigger, text)
        except (OSError, ValueError, TemplateProblem, subprocess.SubprocessError) as exc:
            failed += 1
            error = session.masker.text(f"{type(exc).__name__}: {exc}")
            session.journal.append(
                "notification", trigger=trigger, target=kind, ok=False, error=error
            )
            session.reporter.warn(
                f"notification ({kind}, {trigger}) failed: {error}; the run goes on"
            )
        else:
            session.journal.append("notification", trigger=trigger, target=kind, ok=True)
    return failed


def _send(target: NotifyTarget, session: Any, trigger: str, text: str) -> None:
    run_id = session.run_id
    if target.webhook:
        url = render(target.webhook, {**session.base, **session.secrets})
        if not url.startswith(("http://", "https://")):
            raise ValueError("the webhook is not an http(s) URL")
        body = json.dumps({"text": text}).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=target.timeout_s) as response:  # noqa: S310
            if not 200 <= response.status < 300:
                raise ValueError(f"HTTP {response.status}")
        return
    # A shell command like `run:`: each value one argument, each secret in its environment variable.
    command = render_command(target.command or "", {**session.base, **session.shell_view})
    env = {"OPSKIT_EVENT": trigger, "OPSKIT_RUN_ID": run_id, "OPSKIT_MESSAGE": text}
    env.update(
        {secret_env_name(n): session.secrets[n] for n in command.secrets & set(session.secrets)}
    )
    # Run as a local step is: at the timeout, Ctrl-C or opskit's death its whole process tree stops.
    # subprocess.run's timeout killed /bin/sh only, and a child (`curl ...; true`) outlived opskit.
    done = LocalTransport().run(command.text, env=env, stdin=text, timeout_s=target.timeout_s)
    if done.timed_out:
        raise TimeoutError(f"notify command timed out after {target.timeout_s:g}s")
    if done.rc != 0:
        raise ValueError(f"exit {done.rc}: {done.stderr.strip()[-200:]}")
