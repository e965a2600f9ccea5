"""--report FILE: every run of pack, unpack, verify and doctor leaves one report, JSON or a
Prometheus textfile, success or failure, with nothing secret in it.  The textfile is held to
the exposition format by an outside parser (prometheus_client's) and, where it is installed,
by promtool's own check."""

import json
import shutil
import subprocess

import pytest

from archive_helpers import installation
from aviarytools.timestamps import parse as parse_timestamp
from helpers import aviary, ok

PROMETHEUS_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


@pytest.fixture
def site(tmp_path):
    url, data = str(tmp_path / "live" / "aviary.db"), tmp_path / "live"
    installation(url, data, users=2, docs_per_user=3)
    return {"url": url, "data": data, "root": tmp_path}


def pack_args(site, *extra):
    return ("pack", "--db", site["url"], "--storage", site["data"], *extra)


def test_a_successful_pack_reports_what_it_wrote_and_its_place_in_the_chain(site):
    report, archive = site["root"] / "pack.json", site["root"] / "a.tar"
    ok(*pack_args(site, "-g", site["root"] / "snap.ndjson", "-o", archive, "--report", report))
    got = json.loads(report.read_text())
    assert got["command"] == "pack" and got["exit_status"] == 0 and got["ok"] and got["error"] is None
    assert got["bytes_written"] == archive.stat().st_size
    assert got["documents"] == 6 and got["rows"] > 0 and got["bytes_read"] > 0
    start, end = parse_timestamp(got["start"]), parse_timestamp(got["end"])
    assert start <= end and got["duration_seconds"] == pytest.approx((end - start) / 1e9, abs=0.002)
    assert got["last_success"] == got["end"]
    chain = got["archive"]
    assert chain["level"] == 0 and chain["id"] == chain["base"] and "parent" not in chain
    assert oct(report.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in site["root"].iterdir() if ".partial-" in p.name] == []

    verified = site["root"] / "verify.json"
    ok("verify", archive, "--report", verified)
    got = json.loads(verified.read_text())
    assert got["findings"] == {"info": 0, "warning": 0, "problem": 0}
    assert got["bytes_read"] == archive.stat().st_size and got["archive"]["id"] == chain["id"]


def test_a_failure_is_reported_with_its_line_and_keeps_the_last_success(site):
    report = site["root"] / "pack.json"
    ok(*pack_args(site, "-o", site["root"] / "a.tar", "--report", report))
    success = json.loads(report.read_text())["last_success"]
    secret_url = "postgresql://aviary:s3cr3t-pw@127.0.0.1:1/aviary"
    result = aviary("pack", "--db", secret_url, "--storage", site["data"], "-o", site["root"] / "b.tar",
                    "--report", report)
    assert result.returncode == 1
    text = report.read_text()
    assert "s3cr3t-pw" not in text
    got = json.loads(text)
    assert got["exit_status"] == 1 and not got["ok"] and got["error"].startswith("aviary pack: ")
    assert got["error"] == result.stderr.decode().strip().splitlines()[-1]
    assert got["last_success"] == success


def test_verify_that_finds_problems_reports_their_count(site):
    archive = site["root"] / "a.tar"
    ok(*pack_args(site, "-o", archive))
    cut = site["root"] / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:20000])
    report = site["root"] / "verify.json"
    assert aviary("verify", cut, "--report", report).returncode == 1
    got = json.loads(report.read_text())
    assert got["exit_status"] == 1 and got["findings"]["problem"] >= 1
    assert got["error"] == f"aviary verify: {got['findings']['problem']} problem(s)"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """The textfile parsed by prometheus_client, an outside reader of the exposition format."""
    parser = pytest.importorskip("prometheus_client.parser")
    found = {}
    for family in parser.text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation, family.name
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_prom_report_is_a_textfile_for_node_exporter_and_a_failure_keeps_the_last_success(site):
    report = site["root"] / "aviary-pack.prom"
    ok(*pack_args(site, "-g", site["root"] / "snap.ndjson", "-o", site["root"] / "a.tar", "--report", report))
    text = report.read_text()
    assert text.endswith("\n")
    first = samples(text)
    pack = (("command", "pack"),)
    assert first[("aviary_backup_success", pack)] == 1
    assert first[("aviary_backup_exit_status", pack)] == 0
    assert first[("aviary_backup_documents", pack)] == 6
    assert first[("aviary_backup_archive_level", pack)] == 0
    assert first[("aviary_backup_bytes", (("command", "pack"), ("direction", "written")))] == \
        (site["root"] / "a.tar").stat().st_size
    succeeded = first[("aviary_backup_last_success_timestamp_seconds", pack)]
    assert succeeded == first[("aviary_backup_last_run_timestamp_seconds", pack)]

    result = aviary(*pack_args(site, "--db", str(site["root"] / "missing.db"), "-o", site["root"] / "b.tar",
                               "--report", report))
    assert result.returncode == 1
    failed = samples(report.read_text())
    assert failed[("aviary_backup_success", pack)] == 0 and failed[("aviary_backup_exit_status", pack)] == 1
    assert failed[("aviary_backup_last_success_timestamp_seconds", pack)] == pytest.approx(succeeded, abs=1e-6)
    assert failed[("aviary_backup_last_run_timestamp_seconds", pack)] > succeeded


def test_verify_findings_in_a_prom_report_and_promtool_accepts_it(site, tmp_path):
    archive = site["root"] / "a.tar"
    ok(*pack_args(site, "-o", archive))
    report = tmp_path / "aviary-verify.prom"
    ok("verify", archive, "--report", report)
    found = samples(report.read_text())
    for severity in ("problem", "warning", "info"):
        assert found[("aviary_backup_findings", (("command", "verify"), ("severity", severity)))] == 0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus) is not installed: the parser above is the check")
    check = subprocess.run([promtool, "check", "metrics"], input=report.read_bytes(), capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_no_report_is_left_when_the_folder_for_it_is_missing_and_the_command_says_so(site):
    report = site["root"] / "no" / "such" / "pack.json"
    result = aviary(*pack_args(site, "-o", site["root"] / "a.tar", "--report", report))
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines()[-1].startswith(f"aviary pack: --report {report}: ")


def test_the_readmes_alert_rules_are_valid_prometheus_rules(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus) is not installed")
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rules = readme.split("```yaml\ngroups:", 1)[1].split("\n```", 1)[0]
    path = tmp_path / "aviary.rules.yml"
    path.write_text("groups:" + rules + "\n")
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert b"2 rules found" in check.stdout


def test_unpack_and_doctor_report_what_they_restored_and_found(site, tmp_path):
    archive = site["root"] / "a.tar"
    ok(*pack_args(site, "-o", archive))
    target = tmp_path / "target"
    unpacked = tmp_path / "unpack.json"
    ok("unpack", "--db", target / "aviary.db", "--storage", target, "--create-schema", archive, "--report", unpacked)
    got = json.loads(unpacked.read_text())
    assert got["command"] == "unpack" and got["ok"] and got["documents"] == 6 and got["rows"] > 0
    assert got["bytes_read"] == archive.stat().st_size and got["bytes_written"] > 0
    doctored = tmp_path / "doctor.prom"
    ok("doctor", "--db", target / "aviary.db", "--storage", target, "--against", archive, "--report", doctored)
    found = samples(doctored.read_text())
    assert found[("aviary_backup_findings", (("command", "doctor"), ("severity", "problem")))] == 0
    assert found[("aviary_backup_success", (("command", "doctor"),))] == 1
