"""What popgate sends upstream, seen by the scripted IMAP server: client
address forwarding, keepalive, and credentials that could inject IMAP
commands."""

import base64
import re
import time

import pytest

from fakeimap import FakeIMAP
from pop3client import RawPOP3

pytestmark = pytest.mark.popgate_only

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def fake():
    f = FakeIMAP([MSG]).start()
    yield f
    f.stop()


def sent(fake, pattern):
    return [l for l in fake.commands if re.search(pattern, l, re.I)]


@pytest.mark.parametrize("forward", [True, False])
def test_forward_client_ip_in_imap_id(fake, make_popgate, forward):
    """forward_client_ip sends IMAP ID x-originating-ip/-port with the POP3
    client's address, so the upstream's per-IP limits see the real client."""
    pg = make_popgate({"upstream": {"forward_client_ip": forward}},
                      upstream_port=fake.port)
    with RawPOP3(pg.host, pg.port) as c:
        client_port = c.sock.getsockname()[1]
        c.login(fake.user, fake.password)
        c.ok("QUIT")
    ids = sent(fake, rb"^\S+ ID ")
    if forward:
        assert ids, fake.commands
        assert re.search(rb'"x-originating-ip" "127\.0\.0\.1"', ids[0]), ids
        assert re.search(rb'"x-originating-port" "%d"' % client_port, ids[0]), ids
        # ID goes before the credentials, or the upstream cannot use it.
        first_login = min(i for i, l in enumerate(fake.commands)
                          if re.search(rb"^\S+ (LOGIN|AUTHENTICATE) ", l, re.I))
        assert fake.commands.index(ids[0]) < first_login
    else:
        assert not any(b"x-originating" in l.lower() for l in ids)


def forwarded_login(make_popgate, **fake_options):
    """A login and QUIT with forward_client_ip through a scripted server
    made with FAKE_OPTIONS; returns that server, stopped, and popgate."""
    fake = FakeIMAP([MSG], **fake_options).start()
    try:
        pg = make_popgate({"upstream": {"forward_client_ip": True}},
                          upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            c.ok("QUIT")
    finally:
        fake.stop()
    return fake, pg


@pytest.mark.parametrize("caps", [b"IMAP4rev1 UIDPLUS ID AUTH=PLAIN SASL-IR",
                                  b"IMAP4rev1 UIDPLUS ID AUTH=PLAIN",
                                  b"IMAP4rev1 UIDPLUS ID"])
def test_client_id_goes_with_the_login(make_popgate, caps):
    """The ID forwarding the client's address costs no round trip: it goes
    out in one write with AUTHENTICATE (with or without an initial
    response), whose answer is read after ID's.  Before LOGIN, which
    libetpan sends and reads itself, it still waits for ID's answer."""
    fake, _ = forwarded_login(make_popgate, capabilities=caps, id_waits=True)
    assert fake.id_pipelined == [b"AUTH=PLAIN" in caps], fake.commands
    assert sent(fake, rb"^\S+ ID ")


def test_client_id_refused_login_goes_on(make_popgate):
    """A server that answers ID with BAD: logged, and the login goes on."""
    _, pg = forwarded_login(make_popgate,
                            capabilities=b"IMAP4rev1 ID AUTH=PLAIN SASL-IR",
                            id_answer=b"BAD not here")
    assert [l for l in pg.log_lines("upstream_error") if "op=ID" in l]
    assert [l for l in pg.log_lines() if " event=login " in l]


def test_keepalive_while_client_idles(fake, make_popgate):
    """upstream.keepalive: NOOPs go upstream while the POP3 client idles."""
    pg = make_popgate({"upstream": {"keepalive": "1s"}},
                      upstream_port=fake.port)
    with RawPOP3(pg.host, pg.port) as c:
        c.login(fake.user, fake.password)
        before = len(sent(fake, rb"^\S+ NOOP"))
        deadline = time.monotonic() + 6
        while len(sent(fake, rb"^\S+ NOOP")) < before + 2:
            assert time.monotonic() < deadline, "no keepalive NOOP upstream"
            time.sleep(0.1)
        assert c.ok("STAT").startswith(b"+OK 1 ")
        c.ok("QUIT")


@pytest.mark.parametrize("password", [
    "pw\r\nX1 DELETE INBOX", "pw\nX1 DELETE INBOX", "pw\rX1 DELETE INBOX",
    "pw\0X1"])
def test_credentials_with_line_breaks_never_reach_upstream(
        fake, make_popgate, password):
    """CR, LF or NUL in credentials is -ERR [AUTH]; libetpan would send them
    raw and the remainder would become a second IMAP command."""
    pg = make_popgate(upstream_port=fake.port)
    with RawPOP3(pg.host, pg.port) as c:
        token = base64.b64encode(
            b"\0" + fake.user.encode() + b"\0" + password.encode()).decode()
        resp = c.cmd("AUTH PLAIN " + token)
        assert resp.startswith(b"-ERR [AUTH]"), resp
    with RawPOP3(pg.host, pg.port) as c:
        c.ok("USER " + fake.user)
        if "\0" in password:
            resp = c.cmd(b"PASS " + password.encode())
            assert resp.startswith(b"-ERR"), resp
    assert not sent(fake, rb"DELETE"), fake.commands
    assert not sent(fake, rb"^\S+ (LOGIN|AUTHENTICATE) "), fake.commands


@pytest.mark.parametrize("uidplus", [True, False])
def test_X_V0006_quit_spares_others_deleted(make_popgate, uidplus):
    """X-V0006 at the IMAP level: another client has flagged message 2
    \\Deleted without expunging.  The POP3 session deletes message 1 and
    QUITs.  Message 2 must survive, with or without UIDPLUS (no bare
    EXPUNGE while other \\Deleted messages exist); without UIDPLUS popgate
    may instead refuse with -ERR, but never remove anything else."""
    msgs = [MSG.replace(b"hello", b"message %d" % n) for n in (1, 2, 3)]
    caps = b"IMAP4rev1 ID" + (b" UIDPLUS" if uidplus else b"")
    fake = FakeIMAP(msgs, capabilities=caps, deleted=[2]).start()
    try:
        pg = make_popgate(upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            _, listing = c.multi("UIDL")
            number = {int(l.split()[1]): int(l.split()[0])
                      for l in listing.splitlines()}
            c.ok("DELE %d" % number[1])
            resp = c.cmd("QUIT")
        assert 2 in fake.live, fake.commands
        assert 3 in fake.live
        if uidplus:
            assert resp.startswith(b"+OK"), resp
        if resp.startswith(b"+OK"):
            assert 1 not in fake.live, fake.commands
        else:
            assert resp.startswith(b"-ERR "), resp
    finally:
        fake.stop()


def test_capabilities_after_login_asked_only_to_delete(make_popgate):
    """A login OK without the server's capabilities (Exchange's) costs no
    CAPABILITY round trip: only an UPDATE that deletes needs them (UIDPLUS),
    and asks then, before flagging anything."""
    msgs = [MSG.replace(b"hello", b"message %d" % n) for n in (1, 2)]
    fake = FakeIMAP(msgs).start()
    try:
        pg = make_popgate(upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            c.multi("RETR 1")
            c.ok("QUIT")
        assert not sent(fake, rb"^\S+ CAPABILITY"), fake.commands
        del fake.commands[:]
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            c.ok("DELE 1")
            c.ok("QUIT")
        names = [l.split()[1].upper() + (b" " + l.split()[2].upper()
                                         if l.split()[1].upper() == b"UID"
                                         else b"")
                 for l in fake.commands]
        assert names.index(b"CAPABILITY") < names.index(b"UID STORE") \
            < names.index(b"UID EXPUNGE"), fake.commands
        assert fake.live == [2], fake.commands
    finally:
        fake.stop()


@pytest.mark.parametrize("refusal, answer, counted", [
    (b"NO [AUTHENTICATIONFAILED] Invalid credentials", b"-ERR [AUTH] ", True),
    (b"NO Login failed", b"-ERR [AUTH] ", True),
    (b"NO [UNAVAILABLE] Temporary authentication failure", b"-ERR [SYS/TEMP] ",
     False),
    (b"NO [LIMIT] Too many connections", b"-ERR [SYS/TEMP] ", False),
    (b"NO [INUSE] Mailbox locked", b"-ERR [IN-USE] ", False),
    (b"NO [CONTACTADMIN] Account disabled", b"-ERR [SYS/PERM] ", False),
])
def test_login_refusal_by_its_code(make_popgate, refusal, answer, counted):
    """A refused upstream login is [AUTH] only when the credentials were
    the problem (RFC 5530 codes): a server that cannot log anyone in now
    must not make the client ask its user for the password, nor count as
    a failed login for fail2ban and the limits."""
    fake = FakeIMAP([MSG], login_refusal=refusal).start()
    try:
        pg = make_popgate(upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.ok("USER " + fake.user)
            resp = c.cmd("PASS " + fake.password)
            assert resp.startswith(answer), resp
        pg.wait_log(r"event=upstream_login_failed ", timeout=5)
        assert bool(pg.log_lines("auth_failed")) == counted, pg.log()
        assert bool(pg.log_lines("login_error")) != counted, pg.log()
    finally:
        fake.stop()
