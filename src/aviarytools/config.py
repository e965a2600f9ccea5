"""Where the database is: --db, else AVIARY_DB, else Aviary's own variables.

So the tools run unchanged beside an Aviary deployment: with DB_TYPE,
DB_HOST, ... or DATA_DIR set as Aviary has them, no option is needed.
"""

import os
import re
from collections.abc import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from .errors import ConfigError, register_secret

DEFAULT_DATA_DIR = "/data"

# The variables of Aviary's that aviarytools reads; Aviary takes each also as NAME_FILE.
AVIARY_VARIABLES = frozenset((
    "DB_TYPE", "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME", "DB_SSLMODE", "DATA_DIR", "PDF_DIR",
    "STORAGE_BACKEND", "S3_ENDPOINT", "S3_REGION", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY",
    "S3_FORCE_PATH_STYLE",
))
SECRET_VARIABLES = frozenset(("DB_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"))
MAX_VALUE_FILE = 1 << 16  # a NAME_FILE larger than this holds no setting


class AviaryEnvironment(Mapping):
    """The environment as Aviary reads it (its config.Get): each of its variables NAME is
    NAME's value if that is set and not empty, else the content of the file NAME_FILE names,
    surrounding whitespace trimmed (a Docker secret's trailing newline, say).  Where Aviary
    falls back to the default when NAME_FILE cannot be read, this is an error naming it."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(name)
        if not value and name in AVIARY_VARIABLES and self._environ.get(name + "_FILE"):
            value = _value_file(name + "_FILE", self._environ[name + "_FILE"])
            if name in SECRET_VARIABLES:
                register_secret(value)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self):
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def aviary_environment(environ: Mapping[str, str] | None = None) -> AviaryEnvironment:
    """`environ` (os.environ by default) read as Aviary reads it."""
    environ = os.environ if environ is None else environ
    return environ if isinstance(environ, AviaryEnvironment) else AviaryEnvironment(environ)


def _value_file(variable: str, path: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_VALUE_FILE + 1)
    except OSError as e:
        raise ConfigError(f"{variable}={path}: {e.strerror or e}: give a readable file holding the value") from None
    if len(data) > MAX_VALUE_FILE:
        raise ConfigError(f"{variable}={path}: more than {MAX_VALUE_FILE} bytes: not a file holding one value")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}={path}: not UTF-8 text") from None


def _postgres_url_from_env(environ) -> str:
    user = environ.get("DB_USER", "aviary")
    password = environ.get("DB_PASSWORD", "")
    register_secret(password)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    host = environ.get("DB_HOST", "localhost")
    port = environ.get("DB_PORT", "5432")
    name = environ.get("DB_NAME", "aviary")
    sslmode = environ.get("DB_SSLMODE", "disable")
    return f"postgresql://{auth}@{host}:{port}/{quote(name, safe='')}?sslmode={quote(sslmode)}"


def resolve_db_url(option: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The database URL to use, from the option or the environment."""
    environ = aviary_environment(environ)
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


def db_origin(option: str | None, environ=os.environ) -> str | None:
    """How resolve_db_url came to its SQLite path when nothing named the database (for a
    message saying it is not there), or None when something did."""
    if option or environ.get("AVIARY_DB") or environ.get("DB_TYPE", "sqlite").lower() != "sqlite":
        return None
    if environ.get("DATA_DIR"):
        return "$DATA_DIR/aviary.db: name another with --db URL or $AVIARY_DB"
    return ("the default: nothing names a database and DATA_DIR is unset; name it with --db URL,"
            " $AVIARY_DB or DATA_DIR")


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
