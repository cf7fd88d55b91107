"""server_agent: see README.md; built by its own issue."""
