"""Passwords in a storage URL, in the user info or as a query parameter, appear in no output.

Every output names a storage through :func:`stabsearch.study.storage.masked_url`; these
tests feed a secret through each of them (stdout, stderr, the ``next:`` hint,
error messages, the HTML report and the dashboard note stored in the database),
on SQLite (which takes and ignores a query password) and on PostgreSQL when
STABSEARCH_TEST_POSTGRES is set (.ci/run sets it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna_dashboard import get_note

from tests.support import ROOT, module_path
from stabsearch.study.storage import mask_text, masked_url, secrets_of

SECRET = "S3cret-x9"
PG = os.environ.get("STABSEARCH_TEST_POSTGRES")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("url", [
    f"postgresql://me:{SECRET}@db:5432/studies",
    f"postgresql://me@db/studies?password={SECRET}",
    f"postgresql://me@db/studies?PASSWORD={SECRET}&sslmode=require",
    f"postgresql://me@db/studies?passwd={SECRET}",
    f"postgresql://me@db/studies?Pwd={SECRET}",
    f"postgresql://me@db/studies?sslmode=verify-full&sslpassword={SECRET}",
    f"postgresql://me:{SECRET}@db/studies?password={SECRET}&password=other-{SECRET}",
    f"mysql+pymysql://me:{SECRET.replace('-', '%2D')}@db/studies",
    f"sqlite:///studies/x.db?password={SECRET}",
])
def test_masked_url_hides_every_password_like_part(url):
    shown = masked_url(url)
    assert SECRET not in shown and SECRET.replace("-", "%2D") not in shown and "***" in shown
    assert shown.split("://")[0] == url.split("://")[0] and ("@db" in shown or "studies/x.db" in shown)
    assert mask_text(f"cannot open {url}: bad password {SECRET}", url).count("***") >= 2
    assert SECRET not in mask_text(f"cannot open {url}: bad password {SECRET}", url)


def test_masked_url_keeps_what_is_not_a_secret():
    assert masked_url("postgresql://me@db:5432/studies?sslmode=require&connect_timeout=5") == \
        "postgresql://me@db:5432/studies?sslmode=require&connect_timeout=5"
    assert masked_url("sqlite:///studies/stabsearch.db") == "sqlite:///studies/stabsearch.db"
    assert masked_url("journal:studies/j.log") == "journal:studies/j.log"
    assert secrets_of("postgresql://me@db/x?sslmode=require") == []
    assert mask_text("a bad pass at x", "postgresql://me:x@db/x") == "a bad pass at ***"  # whole words only


def _stabsearch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stabsearch", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def _dashboard_banner(url: str, cwd: Path) -> str:
    """The line ``stabsearch dashboard`` prints when it starts, read from its stderr, then stop it."""
    proc = subprocess.Popen([sys.executable, "-m", "stabsearch", "dashboard", "--storage", url, "--port", "0"],
                            cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # blocks on the process's state, not on a clock
            lines.append(line)
            if "optuna-dashboard for" in line or "error" in line:
                break
        return "".join(lines)
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def _outputs_of_every_command(url: str, study: str, cwd: Path, cli) -> list[str]:  # noqa: ANN001
    """What each command prints: the run in its own process (warnings and logging included), the rest in this one."""
    r = _stabsearch("run", module_path("tiny"), "--storage", url, "--study", study, "--trials", 3, "--steps", 40,
                    "--confirm", 1, "--seeds", 1, "--no-progress", cwd=cwd)
    outputs = [r.stdout + r.stderr]
    for args in (
        ("trials", "--storage", url, "--study", study),
        ("trials", "--storage", url, "--study", study, "--format", "json"),
        ("recommend", "--storage", url, "--study", study, "--format", "python"),
        ("report", "--storage", url, "--study", study, "--output", cwd / "again.html"),
        ("studies", "--storage", url),
        ("trials", "--storage", url, "--study", "no-such-study"),
    ):
        result = cli(*args)
        outputs.append(result.out + result.err)
    outputs.append(_dashboard_banner(url, cwd))
    return outputs


def _assert_nothing_shows(secret: str, url: str, study: str, cwd: Path, cli) -> None:  # noqa: ANN001
    outputs = _outputs_of_every_command(url, study, cwd, cli)
@pytest.mark.slow
def test_a_query_password_on_sqlite_appears_in_no_output(workdir, cli):
    url = f"sqlite:///{workdir}/studies/masked.db?password={SECRET}"
    _assert_nothing_shows(SECRET, url, "masked", workdir, cli)


@pytest.mark.skipif(not PG, reason="STABSEARCH_TEST_POSTGRES is not set (.ci/run sets it)")
@pytest.mark.slow
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_postgres_password_in_either_form_appears_in_no_output(workdir, cli, form):
    from sqlalchemy.engine import make_url

    parsed = make_url(PG)
    assert parsed.password, "STABSEARCH_TEST_POSTGRES should carry a password"
    secret = str(parsed.password)
    url = PG if form == "userinfo" else PG.replace(f":{secret}@", "@") + f"?password={secret}"
    assert url.count(secret) == 1
    _assert_nothing_shows(secret, url, f"mask-{form}-{uuid.uuid4().hex[:8]}", workdir, cli)

    bad = cli("trials", "--storage", url.replace(secret, "not-the-password"))
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1, bad.err
    assert "not-the-password" not in bad.err + bad.out and "***" in bad.err


def test_the_storage_examples_run():
    import doctest

    from stabsearch.study import storage

    failures, tried = doctest.testmod(storage)
    assert failures == 0 and tried >= 4
