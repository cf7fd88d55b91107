"""The security team's side: the tamper-evident decision log, its verification and review."""
