"""hial_mock: our Health Information Access Layer for development, demos, tests and pilots.

An OpenID Connect provider and OAuth 2 authorization server (built on authlib) plus an OpenID
AuthZEN 1.0 policy decision point for DICOM actions. "Mock" means it does not replace a hospital's
identity provider; it is still a conformant, secure server: the agents must also work with any
conformant provider found by discovery.
"""
