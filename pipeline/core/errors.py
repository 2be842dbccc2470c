"""Errors a user can act on: each names the file, the record and what to do."""

from __future__ import annotations


class PptError(Exception):
    """Base class for errors that are reported to the user as one line, without a traceback."""


class DatasetError(PptError):
    """A dataset on disk is missing, malformed or inconsistent (names the file and record)."""


class UnsafePickleError(DatasetError):
    """A refs pickle holds something other than plain containers, strings and numbers."""


class StoreError(PptError):
    """A label store is incomplete, corrupt, or of an unknown schema version."""


class ConfigError(PptError):
    """params.yaml or a command-line value is invalid (names the key or flag)."""
