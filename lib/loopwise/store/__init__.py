"""Storage: each service owns its tables behind a small interface.

Backends are picked from a store URL (``sqlite:///var/feedback.db``); the
embedded SQLite backend is the zero-set-up default.
"""

from loopwise.store.sqlite import SqliteDatabase, parse_store_url

__all__ = ["SqliteDatabase", "parse_store_url"]
