"""Family 10: secrets.

Every command of every case runs with the PostgreSQL password and the S3 secret set, and its
whole output is searched for them (harness.Env.scan; the last case sums it up).  Here: errors
that are likeliest to echo a secret, the modes of what pack, unpack -C and a restore create
(under umask 000), and a --redact archive holding no password hash, token hash or pairing."""

from __future__ import annotations

import json
import stat
import zlib
from pathlib import Path
from urllib.parse import quote

from servers import free_ports

from .fixtures import Fixtures
from .harness import Case, Env, Fail, dump_tables, expect_error, expect_ok

WHERE_SERVER = r"postgresql://|s3://|127\.0\.0\.1|DB_|\.invalid|S3"


def modes(root: Path, folders: int = 0o700, files: int = 0o600) -> list[str]:
    """Every entry under `root` (itself included) whose mode is not `folders` or `files`."""
    wrong = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = folders if path.is_dir() else files
        if mode != want:
            wrong.append(f"{path.relative_to(root.parent)} is {mode:04o}, not {want:04o}")
    return wrong


def redacted_values(db: str) -> list[str]:
    """The secret values the source holds: password hashes, pairings, reset tokens, key and token hashes."""
    tables = {t: [json.loads(line) for line in text.splitlines()] for t, text in dump_tables(db).items()}
    found = [row[c] for row in tables["users"] for c in ("password", "rmapi_config", "reset_token")]
    found += [row["key_hash"] for row in tables["api_keys"]] + [row["token_hash"] for row in tables["user_sessions"]]
    return [v for v in found if v]


def secret_cases(env: Env, fx: Fixtures) -> list[Case]:
    pg, s3 = env.pg, env.s3
    closed_port = str(free_ports(1)[0])

    def pack_mode():
        folder = env.fresh("pack-mode")
        output = folder / "backup.tar"
        output.write_bytes(b"old")
        output.chmod(0o644)
        expect_ok(env.run("pack", *fx.source.args, "-o", output, umask=0))
        mode = stat.S_IMODE(output.stat().st_mode)
        if mode != 0o600:
            raise Fail(f"pack -o wrote {output.name} with mode {mode:04o}")
        return "0600"

    def extract_modes():
        out = env.fresh("extract-modes") / "new" / "out"
        expect_ok(env.run("unpack", "-C", out, stdin=fx.archive, umask=0))
        wrong = modes(out)
        if wrong:
            raise Fail(f"{len(wrong)} wrong mode(s): {wrong[0]}")
        return f"{sum(1 for _ in out.rglob('*'))} entries: folders 0700, files 0600"

    def restore_modes():
        folder = env.fresh("restore-modes")
        db, data = folder / "new" / "aviary.db", folder / "new" / "data"
        expect_ok(env.run("unpack", "--create-schema", "--db", db, "--storage", data, stdin=fx.archive, umask=0))
        # A live installation's files, as Aviary makes them (0755/0644 less the umask, here
        # none), so that Aviary running as another user can read them; the database stays private.
        wrong = modes(data, 0o755, 0o644) + [f"{db.name} is {stat.S_IMODE(db.stat().st_mode):04o}"
                                            for _ in [0] if stat.S_IMODE(db.stat().st_mode) != 0o600]
        if wrong:
            raise Fail(f"{len(wrong)} wrong mode(s): {wrong[0]}")
        return "storage folders 0755, documents 0644, database 0600"

    def redaction(gzip: bool):
        args = ["pack", "--redact", *fx.source.args] + (["-z"] if gzip else [])
        archive = expect_ok(env.run(*args)).out
        if gzip:
            archive = zlib.decompress(archive, 31)
        values = redacted_values(fx.source.db)
        shown = [v for v in values if v.encode() in archive or json.dumps(v)[1:-1].encode() in archive]
        if shown:
            raise Fail(f"{len(shown)} of {len(values)} secret values in the archive, e.g. {shown[0][:24]!r}")
        if b'"redacted": true' not in archive:
            raise Fail('metadata.json does not say "redacted": true')
        return f"none of {len(values)} secret values present"

    def failing(args: list[str], extra_env: dict | None = None):
        def run():
            result = env.run(*args, extra_env=extra_env, timeout=120)
            return expect_error(result, WHERE_SERVER).split(": ", 1)[-1][:100]
        return run

    def password_file():
        path = env.fresh("password-file") / "db-password"
        path.write_text(pg.password + "\n")
        return failing(["tables"], {"DB_TYPE": "postgres", "DB_HOST": "127.0.0.1", "DB_PORT": closed_port,
                                    "DB_PASSWORD_FILE": str(path)})()

    def every_output():
        if env.leaks:
            raise Fail(f"{len(env.leaks)} leak(s): {env.leaks[0]}")
        return f"{env.commands} commands, {env.scanned} bytes: no password, no S3 secret"

    url = pg.url("no_such_database")
    bucket = "faults-secrets"
    s3_args = ["--storage", f"s3://{bucket}", "--s3-endpoint"]
    case = lambda name, expected, run, quick=False: Case("10 secrets", name, expected, run, quick=quick)  # noqa: E731
    one_line = "exit 1, one line, no secret"
    return [
        case("pack -o under umask 000, over a 0644 file", "FILE is 0600", pack_mode, quick=True),
        case("unpack -C under umask 000", "folders 0700, files 0600", extract_modes),
        case("restore into a new folder under umask 000", "folders 0755, files 0644, db 0600", restore_modes),
        case("pack --redact (plain)", "no password/token/key hash, pairing", lambda: redaction(False)),
        case("pack --redact -z", "no password/token/key hash, pairing", lambda: redaction(True)),
        case("password in --db URL, no such database", one_line, failing(["tables", "--db", url])),
        case("password in the URL's query string", one_line,
             failing(["tables", "--db", f"postgresql://aviary@127.0.0.1:{pg.port}/nodb?password="
                                        f"{quote(pg.password, safe='')}"])),
        case("password in --db URL, unknown host", one_line,
             failing(["tables", "--db", f"postgresql://aviary:{quote(pg.password, safe='')}@db.invalid/x"])),
        case("DB_PASSWORD, server down", one_line,
             failing(["tables"], {"DB_TYPE": "postgres", "DB_HOST": "127.0.0.1", "DB_PORT": closed_port})),
        case("DB_PASSWORD_FILE, server down", one_line, password_file),
        case("S3 secret, endpoint down", one_line,
             failing(["pack", "--no-db", *s3_args, f"http://127.0.0.1:{closed_port}", "--s3-path-style"])),
        case("S3 secret wrong by one character", one_line,
             failing(["pack", "--no-db", *s3_args, s3.endpoint, "--s3-path-style"],
                     {"S3_SECRET_ACCESS_KEY": s3.secret_key + "x"})),
        case("S3 secret written inside the s3:// URL", one_line,
             failing(["pack", "--no-db", "--storage", f"s3://{s3.access_key}:{s3.secret_key}@{bucket}",
                      "--s3-endpoint", s3.endpoint])),
        Case("10 secrets", "no secret in the output of any command of this run", "absent everywhere",
             every_output, quick=True, alone=True),
    ]


