"""Retention: the rules, the purge sweep, holds, the residue scan and its certificate,
housekeeping, and the lease that keeps one sweep at a time."""
