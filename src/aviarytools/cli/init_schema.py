"""aviary init-schema: create Aviary's tables, keys and indexes."""

import click

from .common import closing, db_option, info, open_db


@click.command("init-schema")
@db_option
def command(db_url):
    """Create Aviary's tables, keys, foreign keys and indexes where missing.

    The same schema Aviary's GORM models create, on SQLite (the file is
    created if needed) or PostgreSQL.  Running it twice is harmless.

    \b
      aviary init-schema --db postgresql://aviary@db/aviary
    """
    with closing(open_db(db_url, create=True)) as db, db.transaction():
        created = db.create_schema()
    info(f"created {len(created)} table(s): {', '.join(created) or 'none'}")
