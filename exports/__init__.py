"""Exports: subject-access and disclosure zips, their files on disk, the disclosure register."""
