"""Open a database by URL: `sqlite:///abs/path.db`, a path, or `postgresql://`."""

from .. import startup
from ..errors import ConfigError
from .base import MODES, Database, Stage

__all__ = ["MODES", "Database", "Stage", "connect"]


def connect(url: str, *, create: bool = False) -> Database:
    """A connection to the database at `url` (libpq's environment applies).

    `create` allows a new SQLite file (init-schema); otherwise it must exist.
    """
    if url.startswith(("postgresql://", "postgres://")):
        with startup.paused():  # psycopg imported: see startup.py
            from .postgres import PostgresDatabase

            return PostgresDatabase(url)
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        path = path.split("?", 1)[0]
    elif "://" in url:
        raise ConfigError(f"unsupported database URL scheme: {url.split('://', 1)[0]}://")
    else:
        path = url
    if not path:
        raise ConfigError("empty SQLite path")
    from .sqlite import SQLiteDatabase

    return SQLiteDatabase(url, path, create=create)
