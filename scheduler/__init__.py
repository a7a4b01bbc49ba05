"""Scheduled jobs: purge sweeps, hold expiry, housekeeping, and the leader lease."""
