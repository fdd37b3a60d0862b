"""The runbook engine: load and validate YAML runbooks, rehearse them, run them with a crash-safe journal.

Entry points: `validate.load_runbook`, `engine.run`, `resume.resume`, `rehearsal.rehearse`,
`rollback.rollback`; state for reports: `replay.load_run`, `replay.list_runs`, `replay.load_events`.
"""
