"""Persistence of Support Archive: documents, queries, blobs, retention rules, embedded mongod."""
