"""Fixtures: one Dovecot sandbox per test session, a fresh IMAP user and a
fresh popgate per test.

POPGATE_TARGET=dovecot points the POP3 tests at Dovecot's own POP3 server
instead of popgate: a way to check the test clients themselves.  Tests that
need popgate's configuration, log or signals are skipped then.
"""

import itertools
import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "lib"))

import dovecot as dovecot_lib  # noqa: E402
import popgate as popgate_lib  # noqa: E402
from pop3client import RawPOP3  # noqa: E402

TARGET = os.environ.get("POPGATE_TARGET", "popgate")

# Dovecot's passwd-file is re-read at most once a second, so every user a
# test run needs exists from the start: a pool of fresh users (one per test)
# and a few with awkward passwords.  Special users are shared: tests that
# use them must not depend on their mailbox contents.
POOL = 400
SPECIAL_USERS = {
    "spaces": "pass  word  ",           # X-V0011: interior/trailing spaces
    "utf8": "p\u00e4ssw\u00f6rd",         # 8-bit octets in PASS (O-C0003)
}


def pytest_configure(config):
    config.addinivalue_line("markers", "large: big messages; skipped in sanitizer runs")
    config.addinivalue_line("markers", "popgate_only: needs popgate itself, not a stand-in")


def pytest_collection_modifyitems(config, items):
    if TARGET == "popgate":
        return
    skip = pytest.mark.skip(reason="POPGATE_TARGET=%s" % TARGET)
    for item in items:
        if "popgate_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sandbox():
    # Not under pytest's tmp_path: that lives below a 0700 directory that
    # Dovecot's unprivileged processes cannot traverse.
    d = tempfile.mkdtemp(prefix="popgate-dovecot-")
    users = {"user%d" % n: "pw%d-secret" % n for n in range(1, POOL + 1)}
    users.update(SPECIAL_USERS)
    dc = dovecot_lib.Dovecot(d, pop3=True, tls=True, users=users)
    dc.start()
    yield dc
    dc.stop()
    if os.environ.get("KEEP_SANDBOX") is None:
        shutil.rmtree(d, ignore_errors=True)


class User:
    def __init__(self, sandbox, name, password):
        self.sandbox = sandbox
        self.name = name
        self.password = password

    def fill(self, messages):
        """Append MESSAGES in order; returns their UIDs."""
        with dovecot_lib.Mailbox(self.sandbox, self.name) as mb:
            return [mb.append(m) for m in messages]

    def mailbox(self):
        return dovecot_lib.Mailbox(self.sandbox, self.name)

    def messages(self):
        return self.sandbox.messages(self.name)

    def fetch(self, uid):
        return self.sandbox.fetch(self.name, uid)


_user_numbers = itertools.count(1)


def _fresh_user(sandbox):
    n = next(_user_numbers)
    if n > POOL:
        pytest.fail("more than %d users: raise POOL in conftest.py" % POOL)
    return User(sandbox, "user%d" % n, "pw%d-secret" % n)


@pytest.fixture
def user(sandbox):
    """A user of its own for every test, so no test sees another's mail."""
    return _fresh_user(sandbox)


@pytest.fixture
def make_user(sandbox):
    """make_user() -> another fresh user; make_user("name") -> the special
    user of that name (see SPECIAL_USERS)."""
    def make(name=None):
        if name is None:
            return _fresh_user(sandbox)
        return User(sandbox, name, SPECIAL_USERS[name])
    return make


class DovecotStandin:
    """Dovecot's POP3 server in popgate's place (POPGATE_TARGET=dovecot)."""

    def __init__(self, sandbox):
        self.host = sandbox.host
        self.port = sandbox.pop3_port

    def log(self):
        return ""

    def log_lines(self, event=None):
        return []

    def stop(self):
        return 0

    def crash_reports(self):
        return []


@pytest.fixture
def make_popgate(sandbox, tmp_path):
    """make_popgate(overrides=None, upstream_port=None) -> started Popgate.

    In front of the sandbox (no upstream_port), popgate serves unique-ids
    from a store, as a deployment should; every instance of one test shares
    that store (its path is pg.config["store"]["path"]); {"store": None}
    turns it off (path = "").  Every instance is stopped at teardown; the test fails if
    it ignores SIGTERM, if a sanitizer reported anything in its log, or if a
    session process crashed.
    """
    started = []
    counter = itertools.count(1)
    store_dir = []

    def make(overrides=None, upstream_port=None):
        if TARGET == "dovecot":
            return DovecotStandin(sandbox)
        if (overrides or {}).get("store", False) is None:
            overrides = dict(overrides, store={"path": ""})
        elif upstream_port is None:
            if not store_dir:
                store_dir.append(popgate_lib.store_directory())
            overrides = popgate_lib.merge(
                {"store": {"path": os.path.join(store_dir[0], "uids.db")}},
                overrides)
        pg = popgate_lib.Popgate(str(tmp_path / ("popgate%d" % next(counter))),
                                 upstream_port or sandbox.port, overrides)
        started.append(pg)
        return pg.start()

    yield make
    problems = []
    for pg in started:
        try:
            pg.stop()
        except popgate_lib.PopgateError as e:
            problems.append(str(e))
        reports = pg.crash_reports()
        if reports:
            problems.append("crash reports in %s:\n%s"
                            % (pg.log_path, "\n".join(reports)))
    for d in store_dir:
        shutil.rmtree(d, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def popgate(make_popgate):
    return make_popgate()


@pytest.fixture
def connect(popgate):
    """connect() -> RawPOP3 to the per-test popgate, closed at teardown."""
    clients = []

    def make(**kw):
        c = RawPOP3(popgate.host, popgate.port, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
