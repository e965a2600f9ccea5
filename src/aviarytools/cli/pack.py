"""aviary pack: a whole installation as one tar stream on stdout."""

import contextlib
import os
import stat
import sys

import click
from click.core import ParameterSource

from .. import run_report
from ..archive import layout
from ..archive.incremental import unconfirmed
from ..archive.pack import Incremental, PackOptions, pack
from ..errors import AviaryError
from ..progress import Progress, counted, human_size
from ..tar.compression import GZIP, ZSTD, Format, by_suffix, compressed_output
from .common import Refusal, closing, db_option, info, warn, open_db, open_storage, progress_option, \
    report_option, storage_options, table_names, table_options, user_option, widen_pipe


# Single-user Aviary's device pairing, whatever its storage: rmapi's file in the home of the
# user Aviary runs as (/root for the official image), read at run time from $HOME.
PAIRING_IN_HOME = ".config/rmapi/rmapi.conf"


def _default_pairing() -> str:
    return os.path.join(os.path.expanduser("~"), PAIRING_IN_HOME)


@click.command("pack")
@db_option
@storage_options
@user_option
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (created mode 0600) instead of stdout.")
@click.option("-z", "--gzip", "gzip", is_flag=True,
              help="Compress with gzip (what Aviary's admin page reads); also when FILE ends in .gz or .tgz.")
@click.option("--zstd", is_flag=True,
              help="Compress with zstd, on every core (several times faster than gzip; Aviary's"
              " admin page cannot read it); also when FILE ends in .zst or .tzst.")
@click.option("--compression-level", "compression_level", type=int, metavar="N",
              help="With -z (1-9, default 6) or --zstd (1-19, default 3).")
@table_options
@click.option("--no-db", is_flag=True, help="Leave the database out.")
@click.option("--no-files", is_flag=True, help="Leave the documents out.")
@click.option("--allow-empty-storage", is_flag=True,
              help="Pack a storage with no documents although the database has documents rows"
              " (else a storage root that cannot be Aviary's fails the pack).")
@click.option("--redact", is_flag=True,
              help="An export without secrets: no password hashes, rmapi_config, key or token hashes, reset tokens.")
@click.option("--single-user", is_flag=True,
              help="A single-user installation: every file under pdfs/ (or $PDF_DIR) and the device pairing; no database.")
@click.option("--rmapi-conf", metavar="FILE", default=_default_pairing, show_default=f"$HOME/{PAIRING_IN_HOME}",
              help="With --single-user: the device pairing to pack (absent is fine).")
@click.option("-g", "--listed-incremental", "snapshot", metavar="FILE",
              help="Incremental: only the documents changed since the state FILE records (a full archive,"
              " level 0, if there is no FILE); FILE then records the new state (written to stdout: FILE.pending, until"
              " `aviary verify -g FILE` confirms the archive arrived).")
@click.option("--level", metavar="0", callback=lambda ctx, param, value: _level(value),
              help="With -g: a full archive (level 0) whatever FILE holds, and a new chain"
              " (the only level given; the others follow from FILE).")
@click.option("--checksum", is_flag=True,
              help="With -g: a document has changed when its content has (XXH128), not its size and mtime.")
@progress_option
@report_option
def command(db_url, users, output, gzip, zstd, compression_level, tables, exclude_tables, no_db, no_files,
            allow_empty_storage, redact, single_user, rmapi_conf, snapshot, level, checksum, progress, **storage):
    """Write the database and the documents as one tar stream.

    The layout is Aviary's own (metadata.json first, database/<table>.json,
    filesystem/documents/<user>/<path>), so Aviary's admin page restores it,
    plus a last member checksums.xxh128 that `xxhsum -c` checks after a
    plain `tar -x`.  All tables come from one consistent snapshot.

    \b
      aviary pack --db sqlite:///data/aviary.db --storage /data | gzip | ssh backup@host 'cat > aviary.tar.gz'
      aviary pack -z -o aviary-$(date +%F).tar.gz
      aviary pack --zstd | age -r age1... > aviary-$(date +%F).tar.zst.age
      aviary pack --user alice --redact -o alice.tar
    """
    if output is None and sys.stdout.isatty():
        raise Refusal("refusing to write an archive to a terminal: redirect stdout or use -o FILE")
    if snapshot is None and (level is not None or checksum):
        raise click.UsageError("--level and --checksum apply with -g FILE (--listed-incremental)")
    given_pairing = click.get_current_context().get_parameter_source("rmapi_conf") is not ParameterSource.DEFAULT
    if given_pairing and not single_user:
        raise click.UsageError("--rmapi-conf applies with --single-user only")
    if snapshot is not None and (no_files or single_user):
        raise click.UsageError("-g FILE makes an incremental of the documents: not with --no-files or --single-user")
    compress = _compression(output, gzip, zstd, compression_level)
    if single_user:
        _refuse_with_single_user({"--db": db_url, "--user": users, "--tables": tables,
                                  "--exclude-tables": exclude_tables, "--no-db": no_db, "--no-files": no_files})
        _pack_single_user(output, compress, redact, rmapi_conf, progress, allow_empty_storage, storage)
        return
    options = PackOptions(tuple(users) if users else None, table_names(tables, "--tables"),
                          table_names(exclude_tables, "--exclude-tables"), not no_files, redact,
                          Incremental(snapshot, level == 0, checksum) if snapshot else None, allow_empty_storage)
    storage = None if no_files else open_storage(**storage)
    db = None if no_db else open_db(db_url)
    summary = None
    waiting = unconfirmed(snapshot) if snapshot else None  # FILE.pending of a pack never confirmed
    try:
        with _output(output) as out:
            meter = Progress("pack", progress)
            with _compressed(out, compress) as stream:
                target = counted(stream or out, meter)
                with closing(db) if db is not None else contextlib.nullcontext():
                    summary = pack(db, storage, target, options, progress=meter)
            meter.done()
    except BaseException:
        if summary is not None and summary.snapshot is not None:
            summary.snapshot.abort()  # FILE stays as it was: the archive is not complete
        raise
    _note(summary)
    if summary.snapshot is not None:
        # Only now: the archive is whole.  On disk (-o FILE): FILE moves on.  Sent down a pipe,
        # whose far end may yet fail: FILE.pending, until verify -g FILE sees it arrived.
        on_disk = out.partial is not None
        written = summary.snapshot.commit(pending=not on_disk)
        if waiting is not None:
            follows = f"follows archive {summary.parent}" if summary.parent else "is a level 0"
            warn(f"{snapshot}.pending: archive {waiting.archive} (level {waiting.level}) was never confirmed"
                 f" (`aviary verify -g {snapshot}` of what arrived): this archive {follows} instead")
        info(f"{written}: the state of level {summary.level}" + (
            "" if on_disk else f", until `aviary verify -g {snapshot}` confirms the archive arrived"))
    for key in summary.vanished_keys:
        warn(f"{key}: deleted while packing: left out of the incremental and of {snapshot}")
    for found in summary.orphans:
        warn(_orphans_line(found))
    for folder, count in sorted(summary.odd_folders.items()):
        user = layout.user_folder_id(folder)
        warn(f"users/{folder}/: {count} file(s) under pdfs/ of a folder that is not a user id as Aviary names"
             f" one{f' (user {user}, in another form)' if user else ''}: left out (Aviary shows them to no one)")
    for user_id, count in sorted(summary.userless.items()):
        warn(f"users/{user_id}/: {count} document(s) of a user not in the database snapshot: left out")
    _left_out(summary)
    info(f"{sum(summary.table_rows.values())} rows, {summary.documents} documents{_left_out_count(summary)}, "
         f"{human_size(summary.bytes_written)}")


def _left_out(summary) -> None:
    """A warning for each document left out: deleted while packing, unreadable, not a file."""
    for member, _ in summary.vanished:
        warn(f"{member}: deleted while packing: left out (listed in vanished.ndjson)")
    for member, _, why in summary.unreadable:
        warn(f"{why}: left out (listed in vanished.ndjson)")
    for entry in summary.passed_over:
        warn(f"{entry.key}: {entry.what}: left out")


def _left_out_count(summary) -> str:
    count = len(summary.vanished) + len(summary.unreadable) + len(summary.passed_over)
    return f" ({count} left out)" if count else ""


def _orphans_line(found) -> str:
    """One warning for a table's rows that name no user (archive.pack.Orphans)."""
    rows = f"{found.total} row{'s' if found.total != 1 else ''}"
    done = "left out" if found.left_out else f"packed with {found.column} null"
    more = f", and {found.total - len(found.shown)} more" if found.total > len(found.shown) else ""
    return (f"database/{found.table}.json: {rows} whose {found.column} names no user: {done}"
            f" ({'; '.join(found.shown)}{more}; `aviary doctor` lists them)")


def _level(value: str | None) -> int | None:
    """--level: 0 only.  A level 1 or 2 is not asked for, as with GNU tar: it is FILE's
    level + 1."""
    if value is None:
        return None
    if value.strip() != "0":
        raise click.BadParameter(f"{value!r}: only --level 0 (a full archive) can be asked for; an"
                                 " incremental's level is the level FILE records + 1")
    return 0


def _note(summary) -> None:
    run_report.note(bytes_read=summary.document_bytes, bytes_written=summary.bytes_written,
                    documents=summary.documents, rows=sum(summary.table_rows.values()))


def _compression(output, gzip: bool, zstd: bool, level: int | None) -> tuple[Format, int | None] | None:
    """The format and level to write in: -z or --zstd, else what FILE's name says
    (`-o x.tar.gz` gzips, as GNU tar's -a does); a name saying another format is refused."""
    if gzip and zstd:
        raise click.UsageError("-z and --zstd: choose one")
    asked = GZIP if gzip else ZSTD if zstd else None
    named = by_suffix(output) if output else None
    if asked and named and named is not asked:
        raise click.UsageError(f"{output}: the name says {named.name}, not {asked.name}: rename it or drop "
                               f"{'-z' if gzip else '--zstd'}")
    chosen = asked or named
    if chosen is not None and chosen.writer is None:
        raise click.UsageError(f"{output}: pack writes plain, gzip (-z) or zstd (--zstd): for {chosen.name}, "
                               f"write to stdout and pipe it through '{chosen.encode}'")
    if level is not None:
        if chosen is None:
            raise click.UsageError("--compression-level applies with -z or --zstd")
        low, _, high = chosen.levels
        if not low <= level <= high:
            raise click.UsageError(f"--compression-level {level}: {chosen.name} levels are {low} to {high}")
    return (chosen, level) if chosen else None


@contextlib.contextmanager
def _compressed(out, compress):
    """A stream compressing into `out` as `compress` says (None: `out` itself), ended
    only when the archive is whole: a cut stream then reads as cut."""
    if compress is None:
        yield None
        return
    stream = compressed_output(out, *compress)
    yield stream
    stream.close()


def _refuse_with_single_user(given: dict) -> None:
    named = [option for option, value in given.items() if value]
    if named:
        raise click.UsageError(f"--single-user packs no database: not with {', '.join(named)}")


def _pack_single_user(output, compress, redact, rmapi_conf, progress, allow_empty_storage, storage) -> None:
    from ..archive.pack import pack_single_user
    from ..config import aviary_environment
    from ..storage import FilesystemStorage

    pdf_dir = aviary_environment().get("PDF_DIR")  # Aviary's own folder setting
    if storage.get("storage_url") is None and pdf_dir:
        documents, prefix = FilesystemStorage(pdf_dir), ""
    else:
        documents, prefix = open_storage(**storage), layout.SINGLE_USER_STORAGE
    with _output(output) as out, documents:
        meter = Progress("pack", progress)
        with _compressed(out, compress) as stream:
            target = counted(stream or out, meter)
            summary = pack_single_user(documents, prefix, rmapi_conf, target,
                                       redact=redact, progress=meter,
                                       allow_empty_storage=allow_empty_storage)
        meter.done()
    _note(summary)
    if summary.download_copies:
        warn(f"{documents.url}/{prefix}{layout.DOWNLOADS}: {summary.download_copies} file(s) of Aviary's download"
             " links (downloads/<token>/, transient copies, not documents): left out")
    if not summary.pairing:
        warn(f"{rmapi_conf}: " + ("left out (--redact)" if redact else "no device pairing there: none packed"))
    _left_out(summary)
    info(f"single-user: {summary.documents} documents{_left_out_count(summary)}, {human_size(summary.bytes_written)}")


class _output:
    """stdout, or FILE written as FILE.partial-<random> (0600) and renamed when complete."""

    def __init__(self, path):
        self.path = path
        self.partial = None  # the temporary name, when FILE is (to be) a regular file

    def __enter__(self):
        if self.path is None:
            self.file = sys.stdout.buffer
            widen_pipe(self.file)
            return self
        if self._is_special():  # /dev/null, a FIFO, a terminal: written into, never renamed over
            with self._named():
                self.file = open(os.open(self.path, os.O_WRONLY | os.O_CLOEXEC), "wb")
            widen_pipe(self.file)
            return self
        # A new name of our own: never written through a file or link someone left there.
        self.partial = f"{self.path}.partial-{os.urandom(4).hex()}"  # as secrets.token_hex
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._named():
            fd = os.open(self.partial, flags, 0o600)
        os.fchmod(fd, 0o600)
        self.file = open(fd, "wb")
        return self

    def _is_special(self) -> bool:
        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            return False
        return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)

    def write(self, data) -> int:
        try:  # as _named(), which costs a microsecond a call: three calls an archive member
            return self.file.write(data)
        except OSError as e:
            raise self._failed(e) from None

    def flush(self) -> None:
        with self._named():
            self.file.flush()

    def __exit__(self, kind, error, tb):
        if self.path is None or self.partial is None:
            if kind is None:
                self.flush()
            if self.partial is None and self.path is not None:
                with contextlib.suppress(OSError):
                    self.file.close()
            return
        done = False
        try:
            if kind is None:
                with self._named():
                    self.file.flush()
                    os.fsync(self.file.fileno())  # on disk before it takes FILE's name
                    os.replace(self.partial, self.path)
                done = True
        finally:
            with contextlib.suppress(OSError):  # the error that stopped us is the one to report
                self.file.close()
            if not done:
                os.unlink(self.partial)

    @contextlib.contextmanager
    def _named(self):
        """A full disk or a missing folder: one line naming FILE, not a traceback."""
        try:
            yield
        except OSError as e:
            raise self._failed(e) from None

    def _failed(self, error: OSError) -> AviaryError:
        if isinstance(error, BrokenPipeError):
            # Unlike a dump cut short by `| head`, a cut archive is a failed backup.
            return AviaryError("the reader closed the output before the archive was complete")
        return AviaryError(f"{self.path or 'stdout'}: {error.strerror or error}")
