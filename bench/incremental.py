"""The incremental rows of bench/run.py: `pack -g` against GNU tar's `tar -g`
(--listed-incremental), a level 0 and then a level 1 after 1 % of the documents changed.

    level 0 / tar -g                  a full archive and a new snapshot file (ours:
                                      snap.ndjson; tar: tar.snar), none there before
    level 1 (1 % changed) / tar -g    20 of the 2,000 documents rewritten (same size,
                                      new random bytes, hence a new mtime); every round
                                      starts from a copy of the level 0's snapshot
                                      file, so each is a level 1 against the same level 0
    level 0, 100,000 docs / tar -g    the same with 100,000 documents of 1 KB, shown: the
    level 1, 100,000 docs (...)       work per document, which start-up hides at 2,000

And the chain row (chain_section): a level 0 and 6 incrementals (1 % changed before each),
restored in one step (`unpack L0 L1 ... L6`) against the loop of 7 single restores, each into a
new SQLite + folder target; target: faster than the loop, and flat memory.  Checked, untimed:
the one-step target is the loop's (the same documents, `doctor --against L6` exit 0).

Both write their archive to a file: `pack -o` syncs it before it takes its name, so
tar is asked to sync its archive and snar too.  Then a summary: our level 1's time
as a share of our level 0's (target under 10 %, judged at 1 GB: below it our
start-up decides), and its size beside what it must hold: the changed documents'
bytes, the tables (database/*.json) and the manifest (manifest.ndjson); the rest
is tar headers, metadata.json and checksums.xxh128.  And one check, untimed: the
level 1 carries exactly the changed documents (members under
incremental/documents/) and `aviary verify` accepts it.
"""

import os
import random
import shutil
import subprocess
import tarfile
from pathlib import Path

TARGET_SHARE = 0.10  # level 1 time / level 0 time
JUDGED_MB = 1000
FILES = 2000  # the judged rows'; a shown row has many small documents (MANY_FILES in run.py)
CHANGED = 0.01
OURS = "$AVIARY pack --db live/aviary.db --storage live -g snap.ndjson -o {out}"
TAR = "tar -g tar.snar -cf {out} -C live users && sync {out} tar.snar"


def row_names(files: int) -> tuple[str, str]:
    many = "" if files == FILES else f", {files:,} docs"
    return f"level 0{many} / tar -g", f"level 1{many} (1 % changed) / tar -g"


def section(bench, megabytes: int, make_installation, files: int = FILES) -> None:
    level0_name, level1_name = row_names(files)
    if not any(bench.only in name for name in (level0_name, level1_name)):
        return
    work = bench.dir
    live = work / "live"
    make_installation(live, megabytes, files)
    os.sync()  # the setup's writeback, not during a timed run

    def fresh(*names):
        def prepare():
            for name in names:
                (work / name).unlink(missing_ok=True)
            os.sync()
        return prepare

    def keep(source, copy):
        return lambda: shutil.copyfile(work / source, work / copy)

    def restart(copy, target, *names):
        return lambda: (shutil.copyfile(work / copy, work / target), fresh(*names)())

    bench.section(f"incremental: {files:,} documents, {megabytes:,} MB, {CHANGED * 100:.0f} % changed;"
                  f" best of {bench.repeat} runs")
    level0 = [(OURS.format(out="level0.tar"), fresh("snap.ndjson", "level0.tar"), keep("snap.ndjson", "level0.ndjson")),
              (TAR.format(out="tar0.tar"), fresh("tar.snar", "tar0.tar"), keep("tar.snar", "tar0.snar"))]
    times0 = bench.compare(level0_name, *(cmd for cmd, _, _ in level0), None,
                           prepare=[p for _, p, _ in level0], check=[c for _, _, c in level0])
    if times0 is None:  # not asked for: made once, untimed, for the level 1
        for cmd, prepare, check in level0:
            prepare()
            bench.run(cmd)
            check()
    sizes0 = [(work / name).stat().st_size for name in ("level0.tar", "tar0.tar")]
    for name in ("level0.tar", "tar0.tar"):
        (work / name).unlink()

    changed = change(live, CHANGED)
    os.sync()
    times1 = bench.compare(
        level1_name, OURS.format(out="level1.tar"), TAR.format(out="tar1.tar"), None,
        prepare=[restart("level0.ndjson", "snap.ndjson", "level1.tar"), restart("tar0.snar", "tar.snar", "tar1.tar")])
    if times1 is not None:
        summary(bench, megabytes >= JUDGED_MB and files == FILES, times0, times1, changed, sizes0)
    for name in ("level1.tar", "tar1.tar", "snap.ndjson", "level0.ndjson", "tar.snar", "tar0.snar"):
        (work / name).unlink(missing_ok=True)
    shutil.rmtree(live)


def change(live: Path, share: float) -> dict[str, int]:
    """Rewrite `share` of the documents with new random bytes of the same size (so their
    mtime moves on); returns {their member name in an incremental: size}."""
    documents = sorted(live.glob("users/*/pdfs/**/*.pdf"))
    rng = random.Random(2)
    changed = {}
    for path in rng.sample(documents, round(len(documents) * share)):
        size = path.stat().st_size
        path.write_bytes(rng.randbytes(size))
        user, _, rest = str(path.relative_to(live / "users")).partition("/pdfs/")
        changed[f"incremental/documents/{user}/{rest}"] = size
    return changed


def summary(bench, judged: bool, times0, times1, changed: dict[str, int], sizes0) -> None:
    work = bench.dir
    with tarfile.open(work / "level1.tar") as archive:
        members = {m.name: m.size for m in archive if m.isfile()}
    with tarfile.open(work / "tar1.tar") as archive:  # dumpdirs ('D') are not files here
        tar_files = sum(m.type in (tarfile.REGTYPE, tarfile.AREGTYPE) for m in archive)
    carried = {name: size for name, size in members.items() if name.startswith("incremental/documents/")}
    if carried != changed:
        raise bench.Failed(f"level1.tar carries {len(carried)} documents ({sum(carried.values()):,} bytes),"
                           f" expected the {len(changed)} changed ({sum(changed.values()):,} bytes)")
    if tar_files != len(changed):
        raise bench.Failed(f"tar1.tar holds {tar_files} files, expected the {len(changed)} changed")
    bench.run("$AVIARY verify level1.tar")  # exit 1 on any problem: raises

    if times0 is not None:
        share = times1[0] / times0[0]
        verdict = ("PASS" if share < TARGET_SHARE else "MISS") if judged \
            else f"info (judged at {FILES:,} documents, {JUDGED_MB:,} MB)"
        print(f"  level 1 time: {share * 100:.1f} % of level 0's ({times1[0]:.2f}s / {times0[0]:.2f}s;"
              f" target < {TARGET_SHARE * 100:.0f} %)  {verdict}")
    size = (work / "level1.tar").stat().st_size
    docs = sum(changed.values())
    tables = sum(n for name, n in members.items() if name.startswith("database/"))
    manifest = members["manifest.ndjson"]
    needed = docs + tables + manifest
    print(f"  level 1 size {size / 1e6:.2f} MB; changed documents {docs / 1e6:.2f} MB + tables {tables / 1e6:.2f} MB"
          f" + manifest {manifest / 1e6:.2f} MB = {needed / 1e6:.2f} MB; overhead {(size / needed - 1) * 100:.1f} %")
    print(f"  tar -g level 1 {(work / 'tar1.tar').stat().st_size / 1e6:.2f} MB;"
          f" level 0: ours {sizes0[0] / 1e6:.2f} MB, tar {sizes0[1] / 1e6:.2f} MB")
    print(f"  checked: level 1 carries exactly the {len(changed)} changed documents (tar's: {tar_files} files);"
          " aviary verify level1.tar: exit 0")


CHAIN_LEVELS = 7  # a level 0 and 6 incrementals
CHAIN_ROW = "chain of 7: one step / loop of 7"
RESTORE = "$AVIARY unpack --db {target}/aviary.db --storage {target} --create-schema"


def chain_section(bench, megabytes: int, make_installation, files: int = FILES) -> None:
    """One step against the loop (see the module's docstring)."""
    if bench.only not in CHAIN_ROW:
        return
    work = bench.dir
    live = work / "live"
    make_installation(live, megabytes, files)
    archives = [f"chain{level}.tar" for level in range(CHAIN_LEVELS)]
    for level, name in enumerate(archives):
        if level:
            change(live, CHANGED)
        bench.run(OURS.format(out=name).replace("snap.ndjson", "chain.ndjson"))
    os.sync()

    def fresh(*folders):
        return lambda: ([shutil.rmtree(work / folder, ignore_errors=True) for folder in folders], os.sync())

    bench.section(f"restoring a chain: {files:,} documents, {megabytes:,} MB, level 0 + {CHAIN_LEVELS - 1}"
                  f" incrementals ({CHANGED * 100:.0f} % changed each); best of {bench.repeat} runs")
    one_step = f"{RESTORE.format(target='one')} {' '.join(archives)}"
    loop = f"for f in {' '.join(archives)}; do {RESTORE.format(target='loop')} $f || exit 1; done"
    bench.compare(CHAIN_ROW, one_step, loop, 1.0, prepare=[fresh("one"), fresh("loop")])
    same = subprocess.run(["diff", "-r", "--exclude=aviary.db*", work / "one", work / "loop"], capture_output=True)
    if same.returncode:
        raise bench.Failed(f"one step and the loop differ: {same.stdout.decode()[:2000]}")
    bench.run(f"$AVIARY doctor --db one/aviary.db --storage one --against {archives[-1]}")
    fresh("loop")()
    _, loop_peak = bench.run(loop)  # (compare shows our peak only): flat with the chain's length?
    print(f"  the loop's peak (its largest single restore) {loop_peak:.0f} MB")
    print(f"  checked: one step = the loop's documents; doctor --against {archives[-1]}: exit 0;"
          f" archives {sum((work / a).stat().st_size for a in archives) / 1e6:.1f} MB in all")
    for name in (*archives, "chain.ndjson"):
        (work / name).unlink(missing_ok=True)
    for folder in ("one", "loop", "live"):
        shutil.rmtree(work / folder, ignore_errors=True)
