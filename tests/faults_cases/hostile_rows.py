"""Family 4: hostile rows and names into load-table and dump-table, on SQLite and PostgreSQL.

Every input is refused with one line saying where (line, item, column or table), or, for an
unknown key without --strict, dropped with one warning; never executed: every table (users
first) is exactly as before, or holds just the one row that was accepted."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aviarytools.sample import sample_rows

from .fixtures import Fixtures
from .harness import WHERE_ROW, Case, Env, Fail, Skip, expect_error, expect_same

ATTEMPT_ID = "6f1c0b9e-3d7a-4a57-8f0e-0d6c3c1f2a11"
SQL_NAMES = ["users; DROP TABLE users", 'users"; DROP TABLE users; --', "users'; DROP TABLE users; --",
             "x\"); DELETE FROM users; --"]


def attempt(**extra) -> dict:
    return {"id": ATTEMPT_ID, "ip_address": "192.0.2.99", "username": "mallory", "success": 0, **extra}


def line(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode() + b"\n"


def user(**changes) -> dict:
    row = dict(sample_rows(users=1, seed=99)["users"][0])
    row.update(id="6f1c0b9e-3d7a-4a57-8f0e-0d6c3c1f2a12", username="newcomer", email="newcomer@example.org")
    row.update(changes)
    return row


def with_raw(row: dict, column: str, raw: str) -> bytes:
    """A row as JSON with `raw` (any text, valid JSON or not) as the value of `column`."""
    return json.dumps({**row, column: "@@RAW@@"}).replace('"@@RAW@@"', raw).encode() + b"\n"


def deep(depth: int = 10_000, kind: str = "list") -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


@dataclass
class Attack:
    name: str
    args: list[str]  # the command and its arguments, before --db
    input: bytes | None = None
    where: str = WHERE_ROW
    accepted_into: str | None = None  # the load succeeds (with one warning), adding one row here
    quick: bool = False


ATTACKS = [
    Attack("invalid UTF-8 (NDJSON line 2)", ["load-table", "login_attempts"],
           line(attempt()) + b'{"id":"6f1c0b9e-3d7a-4a57-8f0e-0d6c3c1f2a10","ip_address":"\xff\xfe"}\n',
           r"line 2", quick=True),
    Attack("invalid UTF-8 (JSON array item 2)", ["load-table", "login_attempts"],
           b"[" + line(attempt()) + b',{"id":"6f1c0b9e-3d7a-4a57-8f0e-0d6c3c1f2a10","ip_address":"\xff"}]', r"item 2"),
    Attack("lone surrogate \\ud800 in a string", ["load-table", "login_attempts"],
           with_raw(attempt(), "user_agent", '"bad \\ud800 half"'), r"line 1"),
    Attack("10,000-deep nesting in a value (NDJSON)", ["load-table", "login_attempts"],
           with_raw(attempt(), "user_agent", deep()), r"line 1"),
    Attack("10,000-deep nesting in a value (JSON array)", ["load-table", "login_attempts"],
           b"[" + with_raw(attempt(), "user_agent", deep()) + b"]", r"item 1"),
    Attack("10,000-deep nested objects as the row", ["load-table", "login_attempts"],
           deep(kind="object").encode() + b"\n", r"line 1"),
    Attack("NaN token", ["load-table", "users"], with_raw(user(), "page_dpi", "NaN"), r"line 1"),
    Attack("Infinity token", ["load-table", "users"], with_raw(user(), "page_dpi", "Infinity"), r"line 1"),
    Attack("-Infinity token (JSON array)", ["load-table", "users"],
           b"[" + with_raw(user(), "page_dpi", "-Infinity") + b"]", r"item 1"),
    Attack("400-digit integer into an integer column", ["load-table", "users"],
           with_raw(user(), "folder_refresh_percent", "9" * 400), r"line 1, column folder_refresh_percent"),
    Attack("400-digit integer into a float column", ["load-table", "users"],
           with_raw(user(), "page_dpi", "9" * 400), r"line 1, column page_dpi"),
    Attack("400-digit integer into a float column (JSON array)", ["load-table", "users"],
           b"[" + with_raw(user(), "page_dpi", "9" * 400) + b"]", r"item 1"),
    Attack("400-digit exponent-free decimal", ["load-table", "users"],
           with_raw(user(), "page_dpi", "1" + "0" * 399 + ".5"), r"line 1, column page_dpi"),
]
for n, name in enumerate(SQL_NAMES):
    ATTACKS += [
        Attack(f"TABLE argument {name!r}", ["load-table", name], line(user()), r"no table"),
        Attack(f"dump-table {name!r}", ["dump-table", name], None, r"no table"),
        Attack(f"JSON key {name!r} with --strict", ["load-table", "login_attempts", "--strict"],
               line(attempt(**{name: 1})), r"line 1, column ", quick=n == 0),
        Attack(f"JSON key {name!r} without --strict", ["load-table", "login_attempts"],
               line(attempt(**{name: 1})), accepted_into="login_attempts"),
    ]
ATTACKS += [
    Attack("JSON key with a newline and a NUL, without --strict", ["load-table", "login_attempts"],
           line(attempt(**{"evil\nkey\u0000; DROP TABLE users": 1})), accepted_into="login_attempts"),
    Attack("--columns carrying SQL", ["dump-table", "users", "--columns", "id,(SELECT 1); DROP TABLE users"],
           None, r"no column"),
    Attack("--user carrying SQL", ["dump-table", "documents", "--user", "x'; DROP TABLE users; --"],
           None, r"no user named"),
    Attack("--user carrying SQL, into load-table", ["load-table", "documents", "--user", "x' OR '1'='1"],
           b"", r"no user named"),
]


def check_accepted(before: dict, after: dict, table: str, result) -> None:
    lines = result.lines
    if result.rc != 0 or len(lines) != 1 or "warning" not in lines[0] or "Traceback" in result.err:
        raise Fail(f"expected exit 0 and one warning; {result.shown()}")
    if any(ord(c) < 32 for c in lines[0]):
        raise Fail(f"raw control characters in the warning: {lines[0][:120]!r}")
    old, new = set(before[table].splitlines()), set(after[table].splitlines())
    added = new - old
    if not old <= new or len(added) != 1 or ATTEMPT_ID.encode() not in next(iter(added)):
        raise Fail(f"{table}: expected exactly the one new row, got {len(added)} new, {len(old - new)} gone")
    for name in before.keys() - {table}:
        if before[name] != after[name]:
            raise Fail(f"table {name} changed")


def hostile_row_cases(env: Env, fx: Fixtures) -> list[Case]:
    def case(attack: Attack, engine: str) -> Case:
        def run():
            folder = env.fresh(f"{attack.name}-{engine}")
            target = fx.sqlite_target(folder) if engine == "sqlite" else fx.pg_target(folder)
            try:
                before = target.state()
                result = env.run(*attack.args, "--db", target.db, stdin=attack.input)
                after = target.state()
                if "users" not in after.tables:
                    raise Fail(f"the users table is gone! {result.shown()}")
                if attack.accepted_into:
                    check_accepted(before.tables, after.tables, attack.accepted_into, result)
                    return "accepted, key dropped with one warning"
                message = expect_error(result, attack.where)
                expect_same(before, after)
                return message.split(": ", 1)[1][:90]
            finally:
                if engine == "postgres":
                    fx.drop_database(target.db)
        expected = ("exit 0, 1 warning, key dropped, only that row added" if attack.accepted_into
                    else "exit 1, one line saying where; tables as before")
        return Case("4 hostile rows", f"{attack.name} ({engine})", expected, run, quick=attack.quick)

    def where_is_sql() -> str:
        raise Skip("--where is the operator's own SQL, by design")

    cases = [case(attack, engine) for attack in ATTACKS for engine in ("sqlite", "postgres")]
    cases.append(Case("4 hostile rows", "dump-table --where 'x; DROP TABLE users'", "(not a fault)", where_is_sql))
    return cases
