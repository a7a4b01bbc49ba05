"""Ingest adapters: SMTP server, chat webhooks, MIME parsing, threading, account linking."""
