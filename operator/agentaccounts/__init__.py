"""agentaccounts: short-lived, least-privilege identities for AI agents."""

__version__ = "0.1.0"
