"""Unique-ids from the store (issue 5), through a running popgate against
the real Dovecot sandbox.  Each test names the SPEC.md statement it checks;
"mission" is the store's promise that ids survive a changed UIDVALIDITY.

The make_popgate fixture gives every popgate of one test the same store
(pg.config["store"]["path"]), so a second instance stands for a restart.
"""

import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "lib"))

import dovecot as dovecot_lib  # noqa: E402
import popgate as popgate_lib  # noqa: E402
from fakeimap import FakeIMAP  # noqa: E402
from messages import simple  # noqa: E402
from pop3client import RawPOP3, pop3_message  # noqa: E402

pytestmark = pytest.mark.popgate_only

ID_RE = re.compile(rb"[0-9]{1,19}")
KILL_MESSAGES = 10000


def session(pg, user, timeout=30.0):
    c = RawPOP3(pg.host, pg.port, timeout=timeout)
    c.login(user.name, user.password)
    return c


def uidl(c):
    """[id] in message-number order, checked against the single-line form
    of UIDL for the first and the last message."""
    _, body = c.multi("UIDL")
    ids = []
    for n, line in enumerate(body.splitlines(), 1):
        num, uid = line.split(b" ")
        assert int(num) == n
        assert ID_RE.fullmatch(uid), uid
        ids.append(int(uid))
    for n in {1, len(ids)} if ids else ():
        assert c.ok("UIDL %d" % n) == b"+OK %d %d\r\n" % (n, ids[n - 1])
    return ids


def ids_by_message_id(c):
    """{Message-ID: unique-id} of the maildrop, from TOP n 0."""
    ids = uidl(c)
    out = {}
    for n, uid in enumerate(ids, 1):
        _, head = c.multi("TOP %d 0" % n)
        m = re.search(rb"(?im)^Message-ID: *(\S+)", head)
        out.setdefault(m.group(1).decode() if m else "none-%d" % n,
                       []).append(uid)
    return out


def assert_rules(ids):
    """X-C0007, X-C0008/C0009: decimal (checked by uidl()), strictly
    increasing with message number (so unique), at most 2^63-1."""
    assert ids == sorted(set(ids)), ids
    assert all(0 < i <= 2 ** 63 - 1 for i in ids)


def uid_validity(sandbox, user):
    with dovecot_lib.Mailbox(sandbox, user.name) as mb:
        _, data = mb.conn.status("INBOX", "(UIDVALIDITY)")
    return int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))


def set_uid_validity(sandbox, user, value):
    sandbox.doveadm("mailbox", "update", "-u", user.name, "--uid-validity",
                    str(value), "INBOX")
    assert uid_validity(sandbox, user) == value


def lower_uid_validity(sandbox, user):
    """A rebuilt folder may get a LOWER UIDVALIDITY (NOTES.md)."""
    old = uid_validity(sandbox, user)
    new = old - 1000 if old > 1000 else old + 1000
    set_uid_validity(sandbox, user, new)
    return new


def store_rows(path, table="record"):
    """Rows in one table of the store, read as any other process would."""
    if not os.path.exists(path):
        return 0
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM %s" % table).fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        db.close()


# --- X-C0007, O-C0039/C0040 ----------------------------------------------

def test_X_C0007_ids_decimal_and_increasing(user, make_popgate):
    """X-C0007: decimal, increasing with message number; O-C0039: 1..70
    characters (at most 19 digits: a signed 64-bit integer)."""
    user.fill([simple(n) for n in range(1, 8)])
    pg = make_popgate()
    c = session(pg, user)
    ids = uidl(c)
    assert len(ids) == 7
    assert_rules(ids)
    c.ok("QUIT")
    assert store_rows(pg.config["store"]["path"]) == 7


def test_O_C0039_C0040_same_ids_next_session_and_after_restart(
        user, make_popgate):
    """O-C0039/C0040: the same message keeps its id in every session, after
    a restart, and from another popgate instance on the same store."""
    user.fill([simple(n) for n in range(1, 6)])
    pg = make_popgate()
    c = session(pg, user)
    first = ids_by_message_id(c)
    c.ok("QUIT")
    c = session(pg, user)
    assert ids_by_message_id(c) == first
    c.ok("QUIT")
    pg.stop()
    pg.start()
    c = session(pg, user)
    assert ids_by_message_id(c) == first
    c.ok("QUIT")
    other = make_popgate()
    c = session(other, user)
    assert ids_by_message_id(c) == first
    c.ok("QUIT")


# --- X-C0008/C0009 -------------------------------------------------------

def test_X_C0008_new_message_after_dele_gets_a_higher_id(user, make_popgate):
    """X-C0008: after DELE+QUIT of the last messages and a new delivery,
    the new message's id is above every id issued before."""
    user.fill([simple(n) for n in range(1, 5)])
    pg = make_popgate()
    c = session(pg, user)
    before = uidl(c)
    c.ok("DELE 4")
    c.ok("DELE 3")
    c.ok("QUIT")
    user.fill([simple(5)])
    c = session(pg, user)
    after = uidl(c)
    assert after[:2] == before[:2]
    assert after[2] > max(before)
    assert_rules(after)


def test_X_C0009_identical_copies_get_different_ids(user, make_popgate):
    """X-C0009: two byte-identical messages have different ids, now and
    after a UIDVALIDITY change, where neither may take the old id of the
    other (an ambiguous fingerprint gets fresh ids)."""
    twin = simple(1)
    user.fill([twin, twin, simple(2)])
    pg = make_popgate()
    c = session(pg, user)
    before = uidl(c)
    c.ok("QUIT")
    assert len(set(before)) == 3
    assert_rules(before)

    lower_uid_validity(user.sandbox, user)
    c = session(pg, user)
    after = ids_by_message_id(c)
    c.ok("QUIT")
    # The unique message is recognised; the twins are not, so both get new
    # ids above everything issued before.
    assert after["<m2@test.example>"] == [before[2]]
    twins = after["<m1@test.example>"]
    assert len(twins) == 2 and len(set(twins)) == 2
    assert min(twins) > max(before)


# --- mission: UIDVALIDITY changes ------------------------------------------

def test_mission_uidvalidity_change_keeps_ids(user, make_popgate):
    """After INBOX's UIDVALIDITY is forced to a lower value with the same
    messages, every message keeps its id; a new message gets a fresh id
    above all earlier ones (X-C0008), also in the next epoch."""
    user.fill([simple(n) for n in range(1, 6)])
    pg = make_popgate()
    c = session(pg, user)
    before = ids_by_message_id(c)
    c.ok("QUIT")

    lower_uid_validity(user.sandbox, user)
    user.fill([simple(6)])
    c = session(pg, user)
    after = ids_by_message_id(c)
    ids = uidl(c)
    c.ok("QUIT")
    assert_rules(ids)
    for mid, old in before.items():
        assert after[mid] == old, mid
    high = max(i for v in before.values() for i in v)
    assert after["<m6@test.example>"][0] > high

    # A second change: the message that arrived in the middle epoch keeps
    # its id too, and the store still serves the same after a restart.
    lower_uid_validity(user.sandbox, user)
    pg.stop()
    pg.start()
    c = session(pg, user)
    assert ids_by_message_id(c) == after
    c.ok("QUIT")


@pytest.fixture
def private_sandbox():
    """A Dovecot of its own, for tests that stop it and rebuild a folder."""
    d = tempfile.mkdtemp(prefix="popgate-rebuild-")
    dc = dovecot_lib.Dovecot(d, users={"rebuild": "rebuild-pw"})
    dc.start()
    yield dc
    dc.stop()
    shutil.rmtree(d, ignore_errors=True)


class SandboxUser:
    def __init__(self, sandbox, name):
        self.sandbox = sandbox
        self.name = name
        self.password = sandbox.users[name]


def rebuild_reversed(dc, user):
    """Stop Dovecot, drop INBOX's index and UID list, rename the message
    files so that the rebuild numbers them in reverse order, start again:
    a new UIDVALIDITY (maybe lower) and every UID different."""
    dc.stop()
    md = os.path.join(dc.dir, "mail", user)
    # The current UID of each file, from Dovecot's UID list ("UID [ext]
    # :BASENAME" after a header line): file names do not sort in UID order
    # (their microsecond parts are not zero-padded).
    uid_of = {}
    with open(os.path.join(md, "dovecot-uidlist")) as f:
        next(f)
        for line in f:
            parts = line.split()
            uid_of[parts[-1].lstrip(":")] = int(parts[0])
    for f in os.listdir(md):
        if f.startswith("dovecot.index") or f == "dovecot-uidlist":
            os.unlink(os.path.join(md, f))
    # All into cur/ (a message in new/ gets the empty info ":2,"), named so
    # that the rebuild, which numbers new files in the order of the time
    # stamp that begins their names, numbers them in reverse UID order.
    files = sorted(((f, sub) for sub in ("cur", "new")
                    for f in os.listdir(os.path.join(md, sub))),
                   key=lambda fs: uid_of[fs[0].split(":")[0]])
    for i, (f, sub) in enumerate(files):
        rest = f.split(".", 1)[1]
        if ":" not in rest:
            rest += ":2,"
        os.rename(os.path.join(md, sub, f),
                  os.path.join(md, "cur", "%d.%s" % (1900000000 - i, rest)))
    dc.start()


def test_mission_rebuilt_folder_with_new_uid_order(private_sandbox,
                                                   make_popgate):
    """A folder rebuilt with its messages in another UID order: ids are
    kept and still increase with message number (X-C0007), so the order
    is the old one, not the new UID order."""
    dc = private_sandbox
    u = SandboxUser(dc, "rebuild")
    msgs = [simple(n) for n in range(1, 6)]
    for m in msgs:
        dc.append(u.name, m)
    # With upstream_port the fixture gives no store: bring one.
    store_dir = popgate_lib.store_directory()
    pg = make_popgate(upstream_port=dc.port, overrides={
        "store": {"path": os.path.join(store_dir, "uids.db")}})
    try:
        c = session(pg, u)
        before = ids_by_message_id(c)
        order = uidl(c)
        c.ok("QUIT")
        old_uv = uid_validity(dc, u)
        rebuild_reversed(dc, u.name)
        with dovecot_lib.Mailbox(dc, u.name) as mb:
            _, data = mb.conn.uid("FETCH", "1",
                                  "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert b"<m5@test.example>" in data[0][1]  # really reordered
        if uid_validity(dc, u) >= old_uv:
            set_uid_validity(dc, u, old_uv - 1)
        c = session(pg, u)
        after = ids_by_message_id(c)
        assert uidl(c) == order
        # Message 1 is still the first message, though its UID is now 5.
        _, head = c.multi("TOP 1 0")
        assert b"<m1@test.example>" in head
        c.ok("QUIT")
        assert after == before
    finally:
        pg.stop()
        shutil.rmtree(store_dir, ignore_errors=True)


def test_X_2_1_2_long_user_names_have_their_own_mapping(make_popgate):
    """X 2.1.2: user names have no length limit, so two long names that
    share their first 150 characters still have separate mappings: one
    store mailbox each (a truncated key gave one for both), and each user's
    first-epoch ids are its own IMAP UIDs."""
    prefix = "u" * 150
    names = [prefix + "-a", prefix + "-b"]
    d = tempfile.mkdtemp(prefix="popgate-long-")
    dc = dovecot_lib.Dovecot(d, users={n: "pw-" + n[-1] for n in names})
    store_dir = popgate_lib.store_directory()
    try:
        dc.start()
        pg = make_popgate(upstream_port=dc.port, overrides={
            "store": {"path": os.path.join(store_dir, "uids.db")}})
        for n in names:
            for i in range(1, 4):
                dc.append(n, simple(i + 10 * names.index(n)))
        for n in names:
            u = SandboxUser(dc, n)
            c = session(pg, u)
            with dovecot_lib.Mailbox(dc, n) as mb:
                assert uidl(c) == mb.uids()
            c.ok("QUIT")
        assert store_rows(pg.config["store"]["path"], "mailbox") == 2
        pg.stop()
    finally:
        dc.stop()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)


# --- X 2.1.4/2.1.5: sizes ------------------------------------------------

NO_FINAL_EOL = (b"From: a@example.org\r\nSubject: no final line ending\r\n"
                b"Message-ID: <noeol@test.example>\r\n\r\nlast line")


@pytest.mark.parametrize("mode", ["upstream", "exact"])
def test_X_2_1_4_list_size_is_retr_size(user, make_popgate, mode):
    """X 2.1.4/2.1.5: LIST octets equal what RETR delivers (before
    stuffing), also for a message without a final line ending; STAT is the
    sum; the same in a second session, from the store's cache."""
    msgs = [simple(1), NO_FINAL_EOL, b"Subject: bare\n\nLF only\n.dot\n"]
    user.fill(msgs)
    pg = make_popgate({"store": {"size_mode": mode}})
    for _ in range(2):
        c = session(pg, user)
        _, listing = c.multi("LIST")
        sizes = [int(l.split()[1]) for l in listing.splitlines()]
        expected = [len(pop3_message(m)) for m in msgs]
        assert sizes == expected
        assert c.ok("STAT") == b"+OK 3 %d\r\n" % sum(expected)
        for n, m in enumerate(msgs, 1):
            _, body = c.multi("RETR %d" % n)
            assert body == pop3_message(m)
        c.ok("QUIT")


def uidmap_tool(pg, *args):
    tool = os.path.join(os.path.dirname(pg.binary), "popgate-uidmap")
    return subprocess.run([tool, "-s", pg.config["store"]["path"]] +
                          list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def list_sizes(c):
    _, listing = c.multi("LIST")
    return [int(l.split()[1]) for l in listing.splitlines()]


def test_measure_after_switch_to_exact(make_popgate):
    """An upstream that estimates sizes (Exchange by default; the scripted
    server adds 300 to every RFC822.SIZE): after size_mode goes from
    upstream to exact, the messages the store knew keep the estimate until
    `popgate-uidmap measure`, then the next login measures them and LIST
    equals what RETR delivers.  No unique-id moves."""
    msgs = [simple(1), simple(2, body_lines=40)]
    fake = FakeIMAP(msgs, size_error=300).start()
    store_dir = popgate_lib.store_directory()
    store = {"path": os.path.join(store_dir, "uids.db")}
    try:
        pg = make_popgate({"store": dict(store, size_mode="upstream")},
                          upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert list_sizes(c) == [len(m) + 300 for m in msgs]
            ids = uidl(c)
            c.ok("QUIT")
        pg.stop()

        pg = make_popgate({"store": dict(store, size_mode="exact")},
                          upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert list_sizes(c) == [len(m) + 300 for m in msgs]
            c.ok("QUIT")
        out = uidmap_tool(pg, "measure")
        assert out.returncode == 0, out.stderr
        assert out.stdout == b"2 messages to be measured at the next logins\n"
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert list_sizes(c) == [len(pop3_message(m)) for m in msgs]
            assert uidl(c) == ids
            for n, m in enumerate(msgs, 1):
                assert c.multi("RETR %d" % n)[1] == pop3_message(m)
            c.ok("QUIT")
        out = uidmap_tool(pg, "measure", fake.user)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(b"0 messages "), out.stdout
        assert uidmap_tool(pg, "measure", "a", "b").returncode == 2
    finally:
        fake.stop()
        shutil.rmtree(store_dir, ignore_errors=True)


# --- the store unavailable -------------------------------------------------

def test_store_unavailable_is_sys_temp(user, make_popgate):
    """An unwritable store: PASS gets -ERR [SYS/TEMP] and no ids are
    invented; once it is writable again the ids are the store's."""
    user.fill([simple(1), simple(2)])
    pg = make_popgate()
    path = pg.config["store"]["path"]
    c = session(pg, user)
    ids = uidl(c)
    c.ok("QUIT")
    pg.stop()

    directory = os.path.dirname(path)
    locked = [directory] + [path + s for s in ("", "-wal", "-shm")
                            if os.path.exists(path + s)]
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in locked}
    try:
        for p in locked:
            os.chmod(p, 0o500 if p == directory else 0)
        pg.start()
        c = RawPOP3(pg.host, pg.port)
        c.ok("USER " + user.name)
        resp = c.cmd("PASS " + user.password)
        assert resp.startswith(b"-ERR [SYS/TEMP] "), resp
        # Not logged in: the session closes, or at least lists nothing.
        try:
            assert c.cmd("UIDL").startswith(b"-ERR")
        except (EOFError, OSError):
            pass
        c.close()
        assert pg.wait_log(r"unique-id store", timeout=5)
        assert user.password not in pg.log()
        pg.stop()
    finally:
        for p, m in modes.items():
            os.chmod(p, m)
    pg.start()
    c = session(pg, user)
    assert uidl(c) == ids
    c.ok("QUIT")


def test_store_in_a_missing_directory_fails_the_check(sandbox, tmp_path):
    """popgate -t names a store whose directory does not exist."""
    cfg = popgate_lib.base_config(sandbox.port, dovecot_lib.free_port())
    cfg["store"] = {"path": str(tmp_path / "missing" / "uids.db")}
    conf = tmp_path / "popgate.conf"
    conf.write_text(popgate_lib.render_config(cfg))
    status, err = popgate_lib.check_config(str(conf))
    assert status != 0
    assert "store.path: directory" in err


# --- the process that holds the store open --------------------------------

def store_holder(pg):
    """The pid of the store holder, from the line it logs once it holds
    the store."""
    m = pg.wait_log(r"event=store_holder_started pid=(\d+)")
    assert m, pg.log()
    pid = int(m.group(1))
    with open("/proc/%d/comm" % pid) as fh:
        assert fh.read().strip() == "popgate-store"
    return pid


def open_files(pid):
    out = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.add(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def wait_gone(pid, timeout=10.0):
    """True once PID has exited (bounded)."""
    deadline = time.monotonic() + timeout
    while dovecot_lib.pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def records_in_file(path):
    """Records in the store file alone, without its -wal (immutable: SQLite
    reads that one file and nothing else)."""
    db = sqlite3.connect("file:%s?immutable=1" % path, uri=True)
    try:
        return db.execute("SELECT count(*) FROM record").fetchone()[0]
    except sqlite3.OperationalError:  # not even the schema there yet
        return 0
    finally:
        db.close()


def test_store_holder_keeps_the_store_open(user, make_popgate):
    """A process of popgate's holds the store open, so that no session's
    connection is SQLite's last: a session that recorded ids leaves them in
    the -wal (the last close would have moved them into the store and
    emptied it), and the holder's checkpoint, once a second, moves them
    into the store file.  When popgate stops, the holder closes last and
    the -wal is empty, everything in the store."""
    user.fill([simple(1), simple(2)])
    pg = make_popgate()
    path = pg.config["store"]["path"]
    holder = store_holder(pg)
    assert holder in popgate_lib.child_pids(pg.proc.pid)
    assert {path, path + "-shm"} <= open_files(holder)
    c = session(pg, user)
    ids = uidl(c)
    c.ok("QUIT")
    assert os.path.getsize(path + "-wal") > 0
    deadline = time.monotonic() + 10
    while records_in_file(path) != 2:
        assert time.monotonic() < deadline, records_in_file(path)
        time.sleep(0.05)
    assert pg.stop() == 0
    assert wait_gone(holder)
    assert os.path.getsize(path + "-wal") == 0
    assert store_rows(path) == 2
    assert "store_holder_exited" not in pg.log()
    pg.start()
    c = session(pg, user)
    assert uidl(c) == ids
    c.ok("QUIT")


def test_store_holder_lost_and_started_again(user, make_popgate):
    """Sessions work on without the holder; the master says so, and a
    reload (SIGHUP) starts a new one."""
    user.fill([simple(1)])
    pg = make_popgate()
    holder = store_holder(pg)
    os.kill(holder, signal.SIGKILL)
    assert pg.wait_log(r"event=store_holder_exited signal=9 ")
    c = session(pg, user)
    ids = uidl(c)
    c.ok("QUIT")
    pg.signal(signal.SIGHUP)
    m = pg.wait_log(r"event=store_holder_started pid=(?!%d\b)(\d+)" % holder)
    assert m, pg.log()
    assert int(m.group(1)) in popgate_lib.child_pids(pg.proc.pid)
    c = session(pg, user)
    assert uidl(c) == ids
    c.ok("QUIT")


def test_store_holder_goes_with_a_killed_master(user, make_popgate):
    """A master killed outright (no stop of its own) takes the holder
    along, so no process keeps the store behind it."""
    pg = make_popgate()
    holder = store_holder(pg)
    pg.kill()
    assert wait_gone(holder)


def test_store_opened_while_the_upstream_lists(make_popgate):
    """A login opens the store while the upstream answers SELECT and the
    listing, so the open adds nothing to the time from PASS to +OK: with
    the answer held back, the session already has the store open."""
    gate = threading.Event()
    fake = FakeIMAP([simple(1)], select_gate=gate).start()
    store_dir = popgate_lib.store_directory()
    path = os.path.join(store_dir, "uids.db")
    try:
        pg = make_popgate({"store": {"path": path}}, upstream_port=fake.port)
        store_holder(pg)
        with RawPOP3(pg.host, pg.port) as c:
            c.ok("USER " + fake.user)
            c.send(b"PASS " + fake.password.encode() + b"\r\n")
            assert fake.select_held.wait(10)
            sessions = popgate_lib.session_pids(pg.proc.pid)
            assert len(sessions) == 1, sessions
            deadline = time.monotonic() + 5
            while path not in open_files(sessions[0]):
                assert time.monotonic() < deadline, open_files(sessions[0])
                time.sleep(0.01)
            gate.set()
            assert c.read_line().startswith(b"+OK"), pg.log()
            # Closed before +OK: a session keeps no store while it serves.
            assert path not in open_files(sessions[0])
            assert len(uidl(c)) == 1
            c.ok("QUIT")
    finally:
        gate.set()
        fake.stop()
        shutil.rmtree(store_dir, ignore_errors=True)


def test_no_store_no_holder(make_popgate):
    """Without a store (store.path = "") there is nothing to hold."""
    pg = make_popgate({"store": None})
    assert pg.stop() == 0
    assert "store_holder" not in pg.log()


# --- kill -9 while a snapshot is recorded ----------------------------------

def import_many(sandbox, user, messages):
    """Deliver MESSAGES (CRLF text) into INBOX in one doveadm import from
    an mbox file: seconds for 10,000, where APPENDs that Dovecot fsyncs one
    by one take minutes."""
    d = tempfile.mkdtemp(prefix="popgate-import-")
    try:
        os.chmod(d, 0o755)
        src = os.path.join(d, "inbox")
        with open(src, "wb") as f:
            for m in messages:
                f.write(b"From sender@example.org Mon Mar  2 10:00:00 2026\n"
                        + m.replace(b"\r\n", b"\n") + b"\n")
        os.chmod(src, 0o644)
        sandbox.doveadm("-o", "mail_fsync=never", "import", "-u", user.name,
                        "mbox:%s:INBOX=%s:INDEX=MEMORY" % (d, src), "", "all")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_X_C0008_kill_9_while_recording_10000_messages(user, make_popgate):
    """popgate (master and session) is killed with SIGKILL while the store
    records a snapshot of 10,000 new messages; after a restart the ids obey
    every rule: decimal, increasing, unique, the same in every session,
    and a new message's id above all of them."""
    import_many(user.sandbox, user,
                [simple(n, body_lines=2) for n in range(1, KILL_MESSAGES + 1)])
    assert len(user.messages()) == KILL_MESSAGES
    pg = make_popgate()
    path = pg.config["store"]["path"]
    c = RawPOP3(pg.host, pg.port, timeout=120)
    c.ok("USER " + user.name)
    c.send(b"PASS " + user.password.encode() + b"\r\n")
    # Wait (bounded) until part of the snapshot is committed, then kill.
    deadline = time.monotonic() + 60
    rows = 0
    while time.monotonic() < deadline:
        rows = store_rows(path)
        if rows > 0:
            break
        time.sleep(0.005)
    sessions = popgate_lib.child_pids(pg.proc.pid)
    pg.signal(signal.SIGKILL)
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pg.wait(10)
    c.close()
    assert 0 < rows, "no snapshot rows within 60 s"
    killed_at = store_rows(path)
    # Mid-snapshot is the point of the test: batches of 1000 commit apart.
    assert killed_at < KILL_MESSAGES, "snapshot finished before the kill"

    pg.start()
    c = session(pg, user, timeout=120)
    ids = uidl(c)
    c.ok("QUIT")
    assert len(ids) == KILL_MESSAGES
    assert_rules(ids)
    assert store_rows(path) == KILL_MESSAGES
    c = session(pg, user, timeout=120)
    assert uidl(c) == ids
    c.ok("DELE %d" % KILL_MESSAGES)
    c.ok("QUIT")
    user.fill([simple(KILL_MESSAGES + 1)])
    c = session(pg, user, timeout=120)
    again = uidl(c)
    c.ok("QUIT")
    assert again[:-1] == ids[:-1]
    assert again[-1] > max(ids)
    assert_rules(again)
    # The store's tool sees one consistent mapping.
    tool = os.path.join(os.path.dirname(pg.binary), "popgate-uidmap")
    if os.access(tool, os.X_OK):
        out = subprocess.run([tool, "-s", path, "show", user.name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=30)
        assert out.returncode == 0, out.stderr
