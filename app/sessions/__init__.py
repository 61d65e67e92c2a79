"""Per-user browser sessions: minting, their record, browser tokens and per-user rate limits."""
