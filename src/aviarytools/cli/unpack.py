"""aviary unpack: extract an archive to a folder, or restore it."""

import os

import click

from .. import errors, run_report
from ..archive.chain import is_file
from ..archive.extract import extract
from ..progress import CountingReader, Progress, human_size
from .common import archives_argument, closing, db_option, given_archives, info, input_name, open_db, \
    open_storage, progress_option, report_option, storage_options, table_names, table_options, user_option, warn


@click.command("unpack")
@archives_argument
@click.option("-C", "--directory", metavar="DIR", help="Extract the members into DIR instead of restoring.")
@click.option("--by-username", is_flag=True,
              help="With -C: each document at DIR/by-username/<username>/<path>, not under its user's id.")
@db_option
@storage_options
@user_option
@click.option("--mode", type=click.Choice(["replace", "merge"]), default="replace", show_default=True,
              help="replace: the target becomes the archive (within --user); merge: add and update only.")
@table_options
@click.option("--no-db", is_flag=True, help="Leave the database as it is.")
@click.option("--no-files", is_flag=True, help="Leave the documents as they are.")
@click.option("--create-schema", is_flag=True, help="Create Aviary's tables first where missing.")
@click.option("--dry-run", is_flag=True, help="Check everything against the target, report, write nothing.")
@click.option("--no-sync", is_flag=True,
              help="Do not wait for restored documents to reach the disk (faster; unsafe if the machine crashes).")
@click.option("--accept-column-loss", is_flag=True,
              help="Restore into tables that lack some of the archive's columns, dropping those "
              "columns' values (each is named); without it such a restore stops before writing.")
@click.option("--accept-redacted", is_flag=True,
              help="Restore a --redact export: passwords, API key and session hashes, reset tokens and "
              "pairings come back empty (every login breaks); without it such a restore stops before writing.")
@click.option("--accept-document-loss", is_flag=True,
              help="A replace may delete more than half of the target's documents (those the archive lacks); "
              "without it such a restore stops before the commit.")
@click.option("--adopt", metavar="ID|NAME",
              help="A single-user archive (pack --single-user): its documents and pairing become this user's.")
@click.option("--finish", is_flag=True,
              help="Finish a restore whose database committed but whose documents did not all move into "
              "place, from its journal in --storage (no ARCHIVE, no --db).")
@progress_option
@report_option
def command(archives, directory, by_username, db_url, users, mode, tables, exclude_tables, no_db, no_files, create_schema,
            dry_run, no_sync, accept_column_loss, accept_redacted, accept_document_loss, adopt, finish, progress,
            **storage):
    """Restore ARCHIVE ({archive}) into a database and storage.

    Several ARCHIVEs are a chain (pack -g), restored as one: a level 0 and
    the incrementals after it, in order (differentials: the level 0 and the
    latest level 1).  Its links are checked first (each archive's parent the
    one before it, one level 0, one selection): a broken chain is refused
    before anything is written.  The tables come from the last archive, and
    the documents its manifest lists, each written once, from the last
    archive that carries it; every archive is checked member by member
    before the commit.

    A restore has three phases.  It stages: the database's rows go into one
    transaction and the documents are written aside; any bad row, corrupt
    member or failed check leaves the target as it was.  It commits: a
    journal of what is left to do is written beside the staged documents,
    then the database commits.  It finishes: the staged documents move into
    place, stale ones are removed, the journal last.  If the finish is cut
    short (the storage lost, a signal), the three lines printed say so and
    `aviary unpack --finish --storage URL` completes it from the journal.
    With -C DIR the members are extracted safely into DIR.

    \b
      aws s3 cp s3://backups/aviary.tar.gz - | aviary unpack --db postgresql://... --storage s3://bucket
      aviary unpack --user alice --dry-run < aviary.tar
      aviary unpack -C /tmp/look < aviary.tar
      aviary unpack --finish --storage s3://bucket
      aviary unpack --db aviary.db --storage /data level0.tar.gz level1.tar.gz level2.tar.zst
    """
    if finish:
        _finish(archives, {
            "-C": directory, "--by-username": by_username, "--db": db_url, "--user": users, "--tables": tables,
            "--exclude-tables": exclude_tables, "--no-db": no_db, "--no-files": no_files,
            "--create-schema": create_schema, "--dry-run": dry_run, "--no-sync": no_sync,
            "--accept-column-loss": accept_column_loss, "--accept-redacted": accept_redacted,
            "--accept-document-loss": accept_document_loss, "--adopt": adopt, "--mode": mode != "replace"}, storage)
        return
    archives = given_archives(archives)
    if len(archives) > 1:
        _refuse_chain_options({"-C": directory, "--finish": finish, "--adopt": adopt})
    meter = Progress("unpack", progress)
    run_report.count_bytes(meter)
    chain = _read_through(archives, meter)
    if directory:
        _refuse_restore_options({
            "--db": db_url, "--storage": storage["storage_url"], "--user": users, "--tables": tables,
            "--exclude-tables": exclude_tables, "--no-db": no_db, "--no-files": no_files,
            "--create-schema": create_schema, "--dry-run": dry_run, "--no-sync": no_sync,
            "--accept-column-loss": accept_column_loss, "--accept-redacted": accept_redacted,
            "--accept-document-loss": accept_document_loss, "--adopt": adopt, "--mode": mode != "replace"})
        summary = extract(*chain[0], directory, by_username, warn, meter)
        meter.done()
        run_report.note(documents=summary.files, bytes_written=summary.bytes)
        info(f"{summary.files} files, {human_size(summary.bytes)} extracted into {directory}")
        return
    if by_username:
        raise click.UsageError("--by-username applies with -C DIR only")
    from ..archive.restore import RestoreOptions, restore_chain  # here: -C DIR does without the database layer

    if adopt:
        given = [name for name, value in (("--user", users), ("--tables", tables), ("--exclude-tables", exclude_tables),
                                          ("--no-db", no_db), ("--mode", mode != "replace")) if value]
        if given:
            raise click.UsageError(f"--adopt gives a single-user archive to one user: not with {', '.join(given)}")

    options = RestoreOptions(mode, tuple(users) if users else None, table_names(tables, "--tables"),
                             table_names(exclude_tables, "--exclude-tables"), not no_db, not no_files,
                             create_schema, dry_run, not no_sync, accept_column_loss, adopt,
                             accept_redacted=accept_redacted, accept_document_loss=accept_document_loss)
    storage = None if no_files else open_storage(**storage)
    db, new_file = (None, None) if no_db else _open_target(db_url, create_schema, dry_run)
    try:
        with closing(db) if db else _nothing():
            summary = restore_chain(chain, db, storage, options, warn, meter)
    except BaseException:
        _remove_new(new_file)  # a failed restore leaves no new database behind
        raise
    meter.done()
    run_report.note(documents=summary.documents, bytes_written=0 if dry_run else summary.document_bytes,
                    rows=sum(counts["written"] for counts in summary.tables.values()))
    report = info if not dry_run else _always
    for table, counts in sorted(summary.tables.items()):
        report(f"{table}: {counts['rows']} row(s) in the archive, {counts['written']} written, "
               f"{counts['unchanged']} unchanged, {counts['removed']} removed{_named(counts)}"
               + (" (dry run)" if dry_run else ""))
    for (key,) in summary.stale_keys or ():
        report(f"{key}: would be deleted (not in the archive; dry run)")
    report(f"documents: {summary.documents} ({human_size(summary.document_bytes)}), "
           f"{summary.stale_documents} stale" + (" (dry run: nothing written)" if dry_run else ""))


def _read_through(archives, meter) -> list[tuple]:
    """(stream, name) of each archive, read through `meter`: its total, every file's size."""
    chain = [(CountingReader(archive, meter), input_name(archive)) for archive in archives]
    if len(archives) > 1:
        sizes = [os.path.getsize(name) if is_file(name) else None for _, name in chain]
        meter.total = None if None in sizes else sum(sizes)  # (a `-`: its metadata's documents' bytes)
    return chain


def _refuse_chain_options(given: dict) -> None:
    named = [option for option, value in given.items() if value]
    if named:
        verb = "takes" if len(named) == 1 else "take"
        raise click.UsageError(f"{' and '.join(named)} {verb} one ARCHIVE, not a chain")


def _finish(archives, given: dict, storage_settings: dict) -> None:
    """unpack --finish: the restores left unfinished in the storage, finished from their journals."""
    named = [option for option, value in given.items() if value]
    if named:
        raise click.UsageError(f"--finish works from the journal in --storage alone: not with {', '.join(named)}")
    if any(input_name(archive) != "-" for archive in archives):
        raise click.UsageError("--finish works from the journal in --storage alone: no ARCHIVE")
    from ..archive.transaction import finish_journals

    with open_storage(**storage_settings) as storage:
        finished = finish_journals(storage, info)
        if not finished:
            info(f"{storage.url}: no unfinished restore")
        for work in finished:
            info(f"{storage.url}/{work.prefix}: finished: {work.moved} document(s) in place,"
                 f" {work.deleted} stale document(s) deleted")


def _open_target(db_url, create_schema, dry_run):
    """(the target database, the SQLite file --create-schema makes for it, if it does).
    A dry run into a SQLite file not made yet checks against an empty database in
    memory: it must leave no new file behind."""
    from ..config import resolve_db_url
    from ..db import connect

    url = resolve_db_url(db_url)
    new = None  # the file and the folders for it that do not exist yet
    if not url.startswith(("postgres://", "postgresql://")):
        path = os.path.abspath(url.removeprefix("sqlite:").removeprefix("//").split("?", 1)[0])
        if not os.path.exists(path):
            new = [path]
            while not os.path.exists(os.path.dirname(new[-1])):
                new.append(os.path.dirname(new[-1]))
    if dry_run and create_schema and new is not None:
        return connect(":memory:", create=True), None
    return open_db(db_url, create=create_schema), new if create_schema else None


def _remove_new(new: list[str] | None) -> None:
    """Remove the database file (and its journal) a failed restore made, and the folders it
    made for it, now empty."""
    path, *folders = new or [None]
    if path is None:
        return
    for name in (path, path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # something else was put there meanwhile
            return


def _refuse_restore_options(given: dict) -> None:
    named = [option for option, value in given.items() if value]
    if named:
        raise click.UsageError(f"-C DIR extracts files: {', '.join(named)} only apply to a restore")


def _named(counts: dict) -> str:
    """The rows a dry run would remove, by key: all of them, or the first few."""
    stale = counts.get("stale")
    if not stale:
        return ""
    more = counts["removed"] - len(stale)
    return f" ({'; '.join(stale)}" + (f"; {more} more" if more > 0 else "") + ")"


def _always(message: str) -> None:
    click.echo(f"aviary unpack: {errors.message(message)}", err=True)


def _nothing():
    import contextlib

    return contextlib.nullcontext()
