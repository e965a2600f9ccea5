"""Where the database is: --db, else AVIARY_DB, else Aviary's own variables.

So the tools run unchanged beside an Aviary deployment: with DB_TYPE,
DB_HOST, ... or DATA_DIR set as Aviary has them, no option is needed.
"""

import os
import re
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import ConfigError, register_secret

DEFAULT_DATA_DIR = "/data"


def _password_from_env(environ) -> str:
    path = environ.get("DB_PASSWORD_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"DB_PASSWORD_FILE {path}: {e.strerror}") from None
    return environ.get("DB_PASSWORD", "")


def _postgres_url_from_env(environ) -> str:
    user = environ.get("DB_USER", "aviary")
    password = _password_from_env(environ)
    register_secret(password)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    host = environ.get("DB_HOST", "localhost")
    port = environ.get("DB_PORT", "5432")
    name = environ.get("DB_NAME", "aviary")
    sslmode = environ.get("DB_SSLMODE", "disable")
    return f"postgresql://{auth}@{host}:{port}/{quote(name, safe='')}?sslmode={quote(sslmode)}"


def resolve_db_url(option: str | None, environ=os.environ) -> str:
    """The database URL to use, from the option or the environment."""
    url = option or environ.get("AVIARY_DB")
    if not url:
        db_type = environ.get("DB_TYPE", "sqlite").lower()
        if db_type in ("postgres", "postgresql"):
            url = _postgres_url_from_env(environ)
        elif db_type == "sqlite":
            url = os.path.join(environ.get("DATA_DIR", DEFAULT_DATA_DIR), "aviary.db")
        else:
            raise ConfigError(f"DB_TYPE={db_type!r}: expected sqlite or postgres")
    remember_url_secret(url)
    return url


def remember_url_secret(url: str) -> None:
    """Register the password inside a URL so no message can show it."""
    parts = urlsplit(url)
    if parts.password:
        register_secret(parts.password)
        register_secret(_unquote(parts.password))
    for match in re.finditer(r"password=([^&\s]+)", url):
        register_secret(match.group(1))


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def display_url(url: str) -> str:
    """`url` with any password replaced by ***: safe to print."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.password:
        return re.sub(r"password=[^&\s]+", "password=***", url)
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    safe = urlunsplit(parts._replace(netloc=userinfo + "@" + netloc[1]))
    return re.sub(r"password=[^&\s]+", "password=***", safe)
