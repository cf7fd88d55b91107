"""hial_mock: see README.md; built by its own issue."""
