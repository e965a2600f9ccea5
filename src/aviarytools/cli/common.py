"""What every command shares: options, output, errors and exit statuses.

Exit statuses: 0 ok, 1 failure or problems found, 2 usage.  Errors are one
line on stderr, prefixed with the command's name, with secrets redacted.
Data goes to stdout; a closed pipe (`| head`) ends the command quietly.
"""

import contextlib
import importlib
import os
import signal
import sys
from typing import NoReturn

import click

from .. import errors, progress, run_report, startup
from ..errors import AviaryError


def db_option(command):
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        envvar=None,
        help="Database: sqlite:///path.db, a path, or postgresql://... "
        "[default: $AVIARY_DB, else Aviary's DB_TYPE/DB_HOST/... or $DATA_DIR/aviary.db]",
    )(command)


def user_option(command):
    return click.option(
        "--user",
        "users",
        metavar="ID|NAME",
        multiple=True,
        help="Only this user's rows (repeatable): a user id or a username.",
    )(command)


def open_db(db_url: str | None, *, create: bool = False):
    """Connect to the database named by --db or the environment."""
    # Imported here: commands that read archives never pay for the database layer.
    from ..config import db_origin, resolve_db_url
    from ..db import connect
    from ..errors import MissingDatabase

    url = resolve_db_url(db_url)
    if url.startswith(("postgresql://", "postgres://")):
        import logging

        # psycopg logs a warning when a COPY dies with its server; the error we
        # raise already says so, in the one line a failure gets.
        logging.getLogger("psycopg").setLevel(logging.ERROR)
    try:
        return connect(url, create=create)
    except MissingDatabase as e:
        origin = db_origin(db_url)
        raise e if origin is None else MissingDatabase(f"{e} ({origin})") from None


def command_name() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.command_path if ctx else "aviary"


def warn(message: str) -> None:
    """A warning on stderr, as `aviary CMD: warning: ...` (on a line of its own: below the
    progress line, which carries on under it)."""
    progress.end_line()
    click.echo(f"{command_name()}: warning: {errors.message(message)}", err=True)


def info(message: str) -> None:
    """A message on stderr, only when someone is watching (stderr is a terminal)."""
    if sys.stderr.isatty():
        click.echo(f"{command_name()}: {errors.message(message)}", err=True)


def stdout_binary():
    return sys.stdout.buffer


class Terminated(SystemExit):
    """SIGTERM arrived: unwind (rolling back) and exit 143.  A SystemExit, as psycopg counts
    an interruption: then it cancels the statement running on the server before unwinding,
    where otherwise the rollback would wait for that statement to end."""

    def __init__(self):
        super().__init__(143)


class PipeClosed(BaseException):
    """The reader of stdout went away (`| head`): stop quietly.

    Raised instead of BrokenPipeError because click turns that into exit 1.
    """


class Group(click.Group):
    """The `aviary` group.  `lazy` maps a command name to the module (relative to
    this package) whose `command` it is: the module is imported only when that
    command runs, or when `aviary --help` lists them all, so a command does not
    pay for importing every other command's libraries."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module = importlib.import_module(self.lazy[cmd_name], __package__)
            self.add_command(module.command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx, formatter):
        """Each command with the whole first sentence of its help, wrapped, where click cuts
        it to the line's width ("exit 0 healthy, 1...")."""
        rows = [(name, command.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as e:  # "Did you mean ...?" among all commands
            raise click.exceptions.NoSuchCommand(e.command_name, possibilities=self.list_commands(ctx),
                                                 ctx=ctx) from None

    def invoke(self, ctx):
        try:
            startup.resume()  # the command's module imported, its arguments parsed
            return super().invoke(ctx)
        except BrokenPipeError:
            raise PipeClosed() from None


def _on_signal(signum, frame):
    # Noted first (errors.stopping): raised inside one of SQLite's callbacks, the exception
    # would be swallowed there, and the database layer raises the one noted instead.
    raise errors.stopping(KeyboardInterrupt() if signum == signal.SIGINT else Terminated())


def run_main(group: click.Group) -> NoReturn:
    """Run the click group with aviarytools' error handling and exit statuses, then end the
    process at once: by then every command has closed what it opened and waited for what it
    started, and Python's own teardown (collecting every object, then clearing every module)
    took 0.03 s after a level 1 of a folder and 0.14 s after a pack from S3, where botocore's
    models make a large heap."""
    try:
        _run(group)
        status = 0
    except SystemExit as e:
        status = e.code
    if status is not None and not isinstance(status, int):
        click.echo(status, err=True)
        run_report.note_error(str(status))
        status = 1
    status = _report(status or 0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # said already (a closed pipe is a quiet exit)
    os._exit(status or 0)


def _report(status: int) -> int:
    """Write the run's --report FILE, if it has one; the exit status after that."""
    try:
        run_report.finish(status)
    except AviaryError as e:
        click.echo(f"{_failed_command('aviary')}: {errors.message(str(e))}", err=True)
        return status or 1
    return status


def _run(group: click.Group) -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not where started ignoring it)
        signal.signal(signal.SIGINT, _on_signal)
    run_report.clock()
    name = "aviary"
    try:
        try:
            group.main(standalone_mode=False, prog_name="aviary")
        finally:
            progress.end_line()  # a message that follows starts on its own line
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        run_report.note_error(e.format_message())
        sys.exit(e.exit_code)
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt
        _fail(f"{_failed_command(name)}: interrupted", 130)
    except AviaryError as e:
        lines = [f"{_failed_command(name)}: {errors.message(line)}" for line in e.lines()]
        for line in lines:
            click.echo(line, err=True)
        run_report.note_error(" / ".join(lines))  # the report's error is one line
        sys.exit(1)
    except (BrokenPipeError, PipeClosed):
        _quiet_stdout()
        sys.exit(0)
    except OSError as e:  # e.g. a full disk under stdout: one line, not a traceback
        click.echo(f"{_failed_command(name)}: {errors.message(e.strerror or str(e))}", err=True)
        run_report.note_error(f"{_failed_command(name)}: {e.strerror or e}")
        _quiet_stdout()
        sys.exit(1)
    except KeyboardInterrupt:
        _fail(f"{_failed_command(name)}: interrupted", 130)
    except Terminated:
        _fail(f"{_failed_command(name)}: terminated", 143)
    _flush_stdout()


def _fail(line: str, status: int) -> NoReturn:
    """Say why the command failed (one line, redacted already), and exit with `status`."""
    click.echo(line, err=True)
    run_report.note_error(line)
    sys.exit(status)


def _failed_command(default: str) -> str:
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return f"{default} {args[0]}" if args else default


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except OSError as e:
        click.echo(f"aviary: {e.strerror or e}", err=True)
        _quiet_stdout()
        sys.exit(1)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush cannot complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def closing(db):
    """Decorator-free helper: `with closing(db):` closes the connection."""
    return contextlib.closing(db)


def comma_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise click.BadParameter("expected a comma-separated list of names")
    return items


def table_options(command):
    """--tables and its complement --exclude-tables, for the commands that move whole tables."""
    command = click.option("--exclude-tables", metavar="A,B",
                           help="All tables but these (e.g. system_settings: keep the target's settings).")(command)
    return click.option("--tables", metavar="A,B", help="Only these tables.")(command)


def table_names(value: str | None, option: str) -> tuple[str, ...] | None:
    """The tables a --tables or --exclude-tables value names; a name that is not one of
    Aviary's data tables is a usage error listing them."""
    from .. import schema

    names = comma_list(value)
    known = [t.name for t in schema.DATA_TABLES]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise click.BadParameter(f"no data table {', '.join(unknown)} (tables: {', '.join(known)})",
                                 param_hint=option)
    return names


def storage_options(command):
    """--storage and the S3 settings that go with an s3:// URL."""
    options = [
        click.option("--storage", "storage_url", metavar="URL",
                     help="Documents: a folder, file:///folder or s3://bucket[/prefix] "
                     "[default: $AVIARY_STORAGE, else Aviary's STORAGE_BACKEND, DATA_DIR, S3_*]"),
        click.option("--s3-endpoint", metavar="URL", help="S3 endpoint [default: $S3_ENDPOINT]."),
        click.option("--s3-region", metavar="NAME", help="S3 region [default: $S3_REGION or us-east-1]."),
        click.option("--s3-path-style", is_flag=True, default=None,
                     help="Path-style S3 addressing (MinIO, SeaweedFS) [default: $S3_FORCE_PATH_STYLE]."),
        click.option("--s3-concurrency", metavar="N", type=click.IntRange(1, 256),
                     help="S3 requests in flight at once [default: $AVIARY_S3_CONCURRENCY or 16]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def open_storage(storage_url=None, **settings):
    """The storage --storage and its settings (storage_options) name, or Aviary's, checked
    (Storage.check: a bucket that does not exist is refused before anything is read or written)."""
    from ..storage import resolve_storage

    storage = resolve_storage(storage_url, **{k: v for k, v in settings.items() if v is not None})
    try:
        storage.check()
    except BaseException:
        storage.close()
        raise
    return storage


class Refusal(click.UsageError):
    """A usage error that needs no usage text: one line, `aviary CMD: why`, exit 2."""

    def __init__(self, message: str):
        super().__init__(message, click.get_current_context(silent=True))

    def show(self, file=None) -> None:
        name = self.ctx.command_path if self.ctx else "aviary"
        click.echo(f"{name}: {errors.message(self.format_message())}", err=True)


class InputFile(click.ParamType):
    """A file to read, or - for stdin.  A file that cannot be opened is a failure like any
    other (one line naming it, exit 1), not a usage error.  stdin on a terminal is refused,
    as gzip does and as pack refuses to write to one: nobody types an archive, and a
    command waiting on a terminal looks like a command that hangs."""

    name = "file"

    def __init__(self, what: str):
        self.what = what  # "an archive", "rows": for the refusal

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        if value == "-":
            if sys.stdin.isatty():
                raise Refusal(f"refusing to read {self.what} from a terminal: name a file or redirect stdin")
            stream = sys.stdin.buffer
        else:
            try:
                stream = open(value, "rb")
            except OSError as e:
                raise AviaryError(f"{value}: {e.strerror or e}") from None
            if ctx is not None:
                ctx.call_on_close(stream.close)
        widen_pipe(stream)
        return stream


# What an archive a command reads may be, said once for every command's help.
ARCHIVE_FORMS = "plain, gzip or zstd"


def archive_argument(command):
    """The optional ARCHIVE argument (default: stdin).  `{archive}` in the command's
    docstring becomes what ARCHIVE may be: "default: stdin; plain, gzip or zstd"."""
    command.__doc__ = command.__doc__.replace("{archive}", f"default: stdin; {ARCHIVE_FORMS}")
    return click.argument("archive", type=InputFile("an archive"), default="-", required=False)(command)


def archives_argument(command):
    """ARCHIVE...: one archive (default: stdin) or a chain; `{archive}` in the docstring says what
    an archive may be, as archive_argument does."""
    command.__doc__ = command.__doc__.replace("{archive}", f"default: stdin; {ARCHIVE_FORMS}")
    return click.argument("archives", metavar="[ARCHIVE]...", nargs=-1, type=InputFile("an archive"))(command)


def given_archives(archives) -> tuple:
    """The ARCHIVEs given (stdin if none); a UsageError if more than one is -."""
    archives = archives or (InputFile("an archive").convert("-", None, None),)
    if sum(input_name(a) == "-" for a in archives) > 1:
        raise click.UsageError("at most one ARCHIVE can be - (stdin)")
    return archives


PIPE_SIZE = 1 << 20


def widen_pipe(stream) -> None:
    """Give a pipe a 1 MiB buffer instead of Linux's 64 KiB.

    Archives move in chunks of up to 1 MiB: through the default buffer each
    chunk costs the process at the other end some 16 wake-ups, and a pack
    piped into `cat` measured 1.0 s instead of 0.7 s for 1 GB.  Best effort:
    not a pipe, not Linux, or above /proc/sys/fs/pipe-max-size, and nothing
    changes.
    """
    try:
        import fcntl
        import stat

        fd = stream.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, ImportError, OSError, ValueError):
        pass


def progress_option(command):
    return click.option("--progress/--no-progress", default=None,
                        help="Show progress on stderr [default: when stderr is a terminal].")(command)


def report_option(command):
    """--report FILE: pack, unpack, verify and doctor leave a report of the run (run_report.py)."""
    return click.option("--report", metavar="FILE", expose_value=False, callback=_begin_report,
                        help="When done (or failed), write a report of the run to FILE: JSON, or a "
                        "Prometheus textfile if FILE ends in .prom.")(command)


def _begin_report(ctx, param, path):
    if path is not None:
        run_report.begin(path, ctx.info_name)


def input_name(stream) -> str:
    return "-" if stream is sys.stdin.buffer or getattr(stream, "name", "-") == "<stdin>" else stream.name


def fail_on_option(command):
    return click.option("--fail-on", type=click.Choice(["problem", "warning"]), default="problem",
                        show_default=True,
                        help="Exit 1 on a finding of this severity or worse.")(command)


def json_line(value: dict) -> None:
    """One JSON object a line on stdout, at once; a reader gone away silences the rest
    (a checking command goes on: its exit status is its verdict)."""
    import json

    try:
        out = stdout_binary()
        out.write(json.dumps(value, ensure_ascii=False).encode() + b"\n")
        out.flush()
    except BrokenPipeError:
        _quiet_stdout()


def report_findings(findings, as_json: bool) -> dict[str, int]:
    """Print each finding (NDJSON on stdout, or one escaped line on stderr) as it comes;
    the count of each severity.

    The exit status of a checking command is its verdict, so a reader that goes away
    (`--json | head -1`) does not end the checks as it ends a dump: they go on with
    stdout silenced, and every finding is still counted."""
    from ..findings import RANK

    counts = dict.fromkeys(RANK, 0)
    # Closed here, whatever happens: a check still suspended inside a database snapshot
    # must end before the caller closes the connection under it.
    with contextlib.closing(findings):
        for finding in findings:
            counts[finding.severity] += 1
            if as_json:
                json_line(finding.as_dict())
            else:
                progress.end_line()  # below the progress line, which carries on under it
                click.echo(f"{command_name()}: {finding.line()}", err=True)
    run_report.note_findings(counts)
    return counts
