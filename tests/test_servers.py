import psycopg


def test_postgres_takes_the_password_over_tcp_and_is_not_in_utc(pg_url):
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "Pacific/Chatham"
        assert conn.execute("SELECT current_user").fetchone()[0] == "aviary"


def test_each_test_gets_its_own_database(pg_server, pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with psycopg.connect(pg_server.url("postgres")) as conn:
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert pg_url.rsplit("/", 1)[1] in names


def test_postgres_survives_a_crash(pg_server, pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE t AS SELECT 42 AS x")
    pg_server.stop(mode="immediate")
    pg_server.start()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (42,)


def test_s3_stores_and_returns_an_object(s3_server, s3_bucket):
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="users/u1/pdfs/a b.pdf", Body=b"%PDF-1.7")
    body = s3.get_object(Bucket=s3_bucket, Key="users/u1/pdfs/a b.pdf")["Body"].read()
    assert body == b"%PDF-1.7"
