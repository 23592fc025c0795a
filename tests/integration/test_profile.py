"""Rows of the behaviour profile (SPEC.md) where the upstream matters.
Each test names the statement id it checks."""

import base64
import re
import socket
import ssl
import time

import pytest

from messages import demo_messages, five, simple
from pop3client import RawPOP3, insecure_tls_context, pop3_message, top_of

popgate_only = pytest.mark.popgate_only


def login(connect, user):
    c = connect()
    c.login(user.name, user.password)
    return c


def test_X_V0004_stat_has_nothing_after(user, connect):
    """X-V0004: STAT is "+OK count octets" and nothing more."""
    user.fill(five())
    c = login(connect, user)
    resp = c.ok("STAT")
    total = sum(len(pop3_message(user.fetch(u))) for u, _, _ in user.messages())
    assert resp == b"+OK 5 %d\r\n" % total


def test_X_V0005_list_format_and_errors(user, connect):
    """X-V0005: scan listing "n octets" only; LIST of a deleted or missing
    message is -ERR."""
    user.fill(five())
    c = login(connect, user)
    _, body = c.multi("LIST")
    assert re.fullmatch(rb"(\d+ \d+\r\n){5}", body), body
    assert re.fullmatch(rb"\+OK 3 \d+\r\n", c.ok("LIST 3"))
    assert c.cmd("LIST 6").startswith(b"-ERR ")
    c.ok("DELE 3")
    assert c.cmd("LIST 3").startswith(b"-ERR ")
    _, body = c.multi("LIST")
    assert [l.split()[0] for l in body.splitlines()] == [b"1", b"2", b"4", b"5"]


def test_X_C0011_bare_lf_dot_line_and_no_final_newline(user, connect):
    """X-C0011: CRLF everywhere (bare LF upstream normalised), dot-stuffed,
    a final CRLF added to a message without one; LIST sizes equal the octets
    RETR delivers before stuffing (X 2.1.4/2.1.5)."""
    msgs = demo_messages()
    user.fill(msgs)
    c = login(connect, user)
    _, listing = c.multi("LIST")
    sizes = [int(l.split()[1]) for l in listing.splitlines()]
    for n, original in enumerate(msgs, 1):
        expected = pop3_message(original)
        c.ok("RETR %d" % n)
        raw = c.read_multiline_raw()
        assert raw == re.sub(rb"(?m)^\.", b"..", expected) + b".\r\n"
        assert sizes[n - 1] == len(expected)


def test_X_V0007_top(user, connect):
    """X-V0007, O-C0034: headers, blank line, k body lines; k beyond the
    body gives the whole message; a "." line is counted and stuffed."""
    msgs = demo_messages()
    user.fill(msgs)
    dotted = pop3_message(msgs[2])
    c = login(connect, user)
    for k in (0, 1, 2, 3, 100):
        _, body = c.multi("TOP 3 %d" % k)
        assert body == top_of(dotted, k), k
    _, body = c.multi("TOP 4 100")
    assert body == pop3_message(msgs[3])
    assert c.cmd("TOP 9 0").startswith(b"-ERR ")


def header_scan_messages():
    """Small and big messages, one whose header alone is longer than the
    16 KiB a TOP reads first, dot lines, a body line longer than a range."""
    def msg(i, header_lines, body_lines, line_len=60):
        head = b"".join(b"Received: from relay%d.example (hop %d) %s\r\n"
                        % (i, k, b"x" * 20) for k in range(header_lines))
        body = b"".join(b"%s%d %s\r\n" % (b"." if k % 7 == 3 else b"", k,
                                           b"y" * line_len)
                        for k in range(body_lines))
        return head + b"Subject: scan %d\r\n\r\n" % i + body
    return [msg(1, 3, 10), msg(2, 4, 2000), msg(3, 2, 5),
            msg(4, 400, 50), msg(5, 5, 3, line_len=40000), msg(6, 3, 800),
            msg(7, 1, 1)]


def test_X_V0007_top_scan_of_every_message(user, connect):
    """X-V0007: a client going through the headers in order (TOP n 0, then
    TOP n 3, for every message) gets each exactly, read ahead or not, and
    RETR afterwards still gives every message whole."""
    uids = user.fill(header_scan_messages())
    expected = [pop3_message(user.fetch(u)) for u in uids]
    c = login(connect, user)
    for k in (0, 3):
        for n, message in enumerate(expected, 1):
            _, body = c.multi("TOP %d %d" % (n, k))
            assert body == top_of(message, k), (n, k)
    for n, message in enumerate(expected, 1):
        _, body = c.multi("RETR %d" % n)
        assert body == message, n
    _, body = c.multi("TOP 4 0")
    assert body == top_of(expected[3], 0)


def test_O_C0026_deleted_message_is_gone(user, connect):
    """O-C0026: after DELE n every reference to n is an error; RSET and NOOP
    (O-C0029) answer +OK."""
    user.fill(five())
    c = login(connect, user)
    c.ok("DELE 2")
    for cmd in ("RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"):
        assert c.cmd(cmd).startswith(b"-ERR "), cmd
    assert c.ok("RSET").startswith(b"+OK")
    assert c.ok("NOOP").startswith(b"+OK")
    c.multi("RETR 2")


def test_X_V0006_other_clients_deleted_survive(user, connect):
    """X-V0006: another IMAP client flags A \\Deleted without expunging; the
    POP3 session deletes B and QUITs; A still exists upstream."""
    uids = user.fill(five())
    c = login(connect, user)
    with user.mailbox() as mb:
        mb.flag(uids[0], [r"\Deleted"])
    c.ok("DELE 2")
    assert c.cmd("QUIT").startswith(b"+OK")
    assert c.at_eof()
    left = {uid: flags for uid, _, flags in user.messages()}
    assert sorted(left) == [uids[0]] + uids[2:]
    assert r"\Deleted" in left[uids[0]]


def test_X_C0004_snapshot(user, connect):
    """X-C0004: mail added upstream during the session is invisible; RETR
    of a message expunged upstream meanwhile is -ERR and the session
    carries on."""
    uids = user.fill(five())
    c = login(connect, user)
    stat = c.ok("STAT")
    with user.mailbox() as mb:
        mb.append(simple(99))
        mb.flag(uids[1], [r"\Deleted"])
        mb.conn.expunge()
    assert c.ok("STAT") == stat
    _, listing = c.multi("LIST")
    assert len(listing.splitlines()) == 5
    assert c.cmd("RETR 2").startswith(b"-ERR ")
    assert c.cmd("TOP 2 0").startswith(b"-ERR ")
    c.multi("RETR 3")
    c.ok("NOOP")
    c.ok("QUIT")


def test_X_2_1_3_two_sessions_of_one_user(user, connect):
    """X 2.1.3: no exclusive lock: two sessions of one user at once."""
    user.fill(five())
    a = login(connect, user)
    b = login(connect, user)
    assert a.ok("STAT") == b.ok("STAT")
    a.multi("RETR 1")
    b.multi("RETR 1")
    a.ok("QUIT")
    b.ok("QUIT")


def test_O_C0039_uidl_stable_across_sessions(user, connect):
    """O-C0039/C0040, X-C0008/C0009: the same id in every session; two
    copies of one message have different ids; ids are decimal and short."""
    msg = simple(1)
    user.fill([msg, msg, simple(2)])
    first = login(connect, user)
    _, ids1 = first.multi("UIDL")
    first.ok("QUIT")
    second = login(connect, user)
    _, ids2 = second.multi("UIDL")
    second.ok("QUIT")
    assert ids1 == ids2
    ids = [l.split()[1] for l in ids1.splitlines()]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(rb"[0-9]{1,19}", i) for i in ids)
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)


def test_X_V0008_X_C0010_unknown_user(connect):
    """X-V0008/V0009: USER is +OK whether or not the mailbox exists; the
    check happens at PASS.  X-C0010: a user the upstream does not know gets
    a login-failed error."""
    c = connect()
    assert c.cmd("USER no-such-user-here").startswith(b"+OK")
    assert c.cmd("PASS whatever").startswith(b"-ERR [AUTH]")


@popgate_only
def test_X_V0011_password_keeps_spaces(make_user, connect):
    """X-V0011: everything after the separator run is the password,
    interior and trailing spaces included."""
    u = make_user("spaces")
    c = connect()
    c.ok("USER " + u.name)
    assert c.cmd("PASS \t " + u.password).startswith(b"+OK")


def test_O_C0003_utf8_password(make_user, connect):
    """O-C0003: 8-bit octets are accepted inside credentials."""
    u = make_user("utf8")
    c = connect()
    c.ok("USER " + u.name)
    assert c.cmd(b"PASS " + u.password.encode("utf-8")).startswith(b"+OK")


@popgate_only
def test_X_V0012_no_apop(user, connect):
    """X-V0012: APOP is not supported."""
    c = connect()
    assert c.cmd("APOP %s 0123456789abcdef0123456789abcdef"
                 % user.name).startswith(b"-ERR ")


@popgate_only
def test_X_V0010_secure_login_refuses_plaintext(user, make_popgate):
    """X-V0010: under login_type "secure", USER/PASS on a plain connection
    get -ERR with a reason."""
    pg = make_popgate({"pop3": {"login_type": "secure"}})
    with RawPOP3(pg.host, pg.port) as c:
        assert c.cmd("USER " + user.name).startswith(b"-ERR ")
        caps = c.multi("CAPA")[1].splitlines()
        assert b"USER" not in caps


@popgate_only
def test_X_V0002_idle_timeout_deletes_nothing(user, make_popgate):
    """X-V0002/X-V0003: on the authenticated idle timeout popgate says the
    connection is closed, closes, and does not enter UPDATE."""
    uids = user.fill(five())
    pg = make_popgate({"pop3": {"timeout_authenticated": "2s",
                                "timeout_unauthenticated": "1s"}})
    with RawPOP3(pg.host, pg.port) as idle:
        idle.sock.settimeout(10)
        started = time.monotonic()
        assert idle.read_line().startswith(b"-ERR")
        assert time.monotonic() - started < 8
    with RawPOP3(pg.host, pg.port) as c:
        c.login(user.name, user.password)
        c.ok("DELE 1")
        c.multi("RETR 2")
        c.sock.settimeout(10)
        assert c.read_line().startswith(b"-ERR")
        assert c.at_eof()
    assert [m[0] for m in user.messages()] == uids
    assert all(r"\Seen" not in f for _, _, f in user.messages())


@popgate_only
def test_retr_marks_seen_at_update_only(user, connect):
    """Read-mark policy: RETR (not TOP) sets \\Seen upstream at QUIT."""
    uids = user.fill(five())
    c = login(connect, user)
    c.multi("RETR 1")
    c.multi("TOP 2 0")
    with user.mailbox() as mb:
        assert all(r"\Seen" not in f for _, _, f in mb.messages())
    c.ok("QUIT")
    assert c.at_eof()
    flags = {uid: f for uid, _, f in user.messages()}
    assert r"\Seen" in flags[uids[0]]
    assert r"\Seen" not in flags[uids[1]]


@popgate_only
def test_max_command_size_line_rejected_session_survives(user, connect):
    """X-E0006/E0007: a line over max_command_size gets -ERR with a reason
    and the session survives or closes cleanly."""
    c = connect()
    resp = c.cmd("NOOP " + "x" * 600)
    assert resp.startswith(b"-ERR ") and len(resp) <= 512
    try:
        assert c.cmd("CAPA").startswith(b"+OK")
    except EOFError:
        pass


def tls_overrides(sandbox, port=None):
    ov = {"tls": {"certificate": sandbox.cert, "key": sandbox.key}}
    if port is not None:
        ov["listen"] = [{"address": "127.0.0.1", "port": port}]
    return ov


@popgate_only
def test_X_E0001_implicit_tls_listener(user, sandbox, make_popgate):
    """X-E0001: an implicit-TLS listener next to the plain one."""
    pg = make_popgate({**tls_overrides(sandbox), "listen": [
        {"address": "127.0.0.1", "port": 0},
        {"address": "127.0.0.1", "port": 0, "tls": True}]})
    user.fill(five())
    with RawPOP3(pg.host, pg.tls_port, tls_context=insecure_tls_context()) as c:
        assert c.greeting.startswith(b"+OK")
        c.login(user.name, user.password)
        _, body = c.multi("RETR 1")
        assert body == pop3_message(user.fetch(user.messages()[0][0]))
        c.ok("QUIT")
    with RawPOP3(pg.host, pg.port) as c:
        assert c.greeting.startswith(b"+OK")


@popgate_only
def test_stls_discards_injected_commands(user, sandbox, make_popgate):
    """RFC 2595 / CVE-2011-0411: "STLS\\r\\nCAPA\\r\\n" in one packet gets
    no answer to the smuggled CAPA inside TLS; CAPA then lacks STLS."""
    pg = make_popgate(tls_overrides(sandbox))
    with RawPOP3(pg.host, pg.port) as c:
        caps = c.multi("CAPA")[1].splitlines()
        assert b"STLS" in caps
        c.send(b"STLS\r\nCAPA\r\n")
        assert c.read_line().startswith(b"+OK")
        assert c.buf == b""
        c.sock = insecure_tls_context().wrap_socket(
            c.sock, server_hostname="localhost")
        c.sock.settimeout(1.0)
        try:
            leaked = c.sock.recv(100)
        except (TimeoutError, ssl.SSLError, OSError):
            leaked = b""
        assert leaked == b""
        c.sock.settimeout(10)
        caps = c.multi("CAPA")[1].splitlines()
        assert b"STLS" not in caps
        assert c.cmd("STLS").startswith(b"-ERR")
        c.login(user.name, user.password)
        c.ok("QUIT")


def b64(text):
    return base64.b64encode(text.encode()).decode()


@popgate_only
def test_X_E0002_auth_plain_initial_response(user, connect):
    """X-E0002: SASL PLAIN (RFC 5034) with an initial response, passed to
    the real upstream."""
    user.fill(five())
    c = connect()
    resp = c.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user.name, user.password)))
    assert resp.startswith(b"+OK"), resp
    assert c.ok("STAT").startswith(b"+OK 5 ")


@popgate_only
def test_X_E0002_auth_plain_continuation_and_login(user, connect):
    """X-E0002: PLAIN with a "+ " continuation, and AUTH LOGIN."""
    c = connect()
    assert c.cmd("AUTH PLAIN").startswith(b"+ ")
    assert c.cmd(b64("\0%s\0%s" % (user.name, user.password))).startswith(b"+OK")
    c.ok("QUIT")
    d = connect()
    assert d.cmd("AUTH LOGIN").startswith(b"+ ")
    assert d.cmd(b64(user.name)).startswith(b"+ ")
    assert d.cmd(b64(user.password)).startswith(b"+OK")
    d.ok("QUIT")


@popgate_only
def test_X_E0002_auth_wrong_password_and_cancel(user, connect):
    """A wrong SASL password is -ERR [AUTH]; "*" cancels an exchange."""
    c = connect()
    resp = c.cmd("AUTH PLAIN " + b64("\0%s\0wrong" % user.name))
    assert resp.startswith(b"-ERR [AUTH]"), resp
    assert c.cmd("AUTH PLAIN").startswith(b"+ ")
    assert c.cmd("*").startswith(b"-ERR")
    c.login(user.name, user.password)


@popgate_only
def test_max_failed_logins_closes(user, make_popgate):
    """After max_failed_logins failures in one connection popgate sends a
    final -ERR and closes (Exchange closes after repeated errors)."""
    pg = make_popgate({"pop3": {"max_failed_logins": 2}})
    with RawPOP3(pg.host, pg.port) as c:
        c.ok("USER " + user.name)
        assert c.cmd("PASS wrong1").startswith(b"-ERR [AUTH]")
        c.ok("USER " + user.name)
        assert c.cmd("PASS wrong2").startswith(b"-ERR")
        try:
            extra = c.read_line() if c.buf else b""
        except EOFError:
            extra = b""
        assert extra == b"" or extra.startswith(b"-ERR")
        assert c.at_eof()


@popgate_only
def test_failed_login_delay(user, make_popgate):
    """A failed login delays the next attempt (failed_login_delay)."""
    pg = make_popgate({"pop3": {"failed_login_delay": "1s"}})
    with RawPOP3(pg.host, pg.port) as c:
        c.ok("USER " + user.name)
        started = time.monotonic()
        assert c.cmd("PASS wrong").startswith(b"-ERR [AUTH]")
        c.ok("USER " + user.name)
        assert c.cmd("PASS " + user.password).startswith(b"+OK")
        assert time.monotonic() - started >= 0.9


def test_pipelining_answers_in_order(user, connect):
    """RFC 2449 PIPELINING: commands sent in one packet are answered in
    order, each exactly once (O-C0005)."""
    msgs = five()
    user.fill(msgs)
    c = login(connect, user)
    c.send(b"STAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nTOP 2 0\r\nNOOP\r\nLIST 9\r\n")
    assert c.read_line().startswith(b"+OK 5 ")
    assert c.read_line().startswith(b"+OK")
    assert len(c.read_multiline().splitlines()) == 5
    assert c.read_line().startswith(b"+OK 2 ")
    assert c.read_line().startswith(b"+OK")
    assert c.read_multiline() == pop3_message(msgs[0])
    assert c.read_line().startswith(b"+OK")
    assert c.read_multiline() == top_of(pop3_message(msgs[1]), 0)
    assert c.read_line().startswith(b"+OK")
    assert c.read_line().startswith(b"-ERR ")
    c.ok("QUIT")


def old_tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1
    return ctx


@popgate_only
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TLS 1.0 on purpose
@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_tls_profile_legacy_admits_tls10(user, sandbox, make_popgate, profile):
    """tls.profile: "modern" refuses TLS 1.0, "legacy" admits it (old
    Outlook versions)."""
    pg = make_popgate({"tls": {"certificate": sandbox.cert, "key": sandbox.key,
                               "profile": profile},
                       "listen": [{"address": "127.0.0.1", "port": 0, "tls": True}]})
    try:
        c = RawPOP3(pg.host, pg.tls_port, tls_context=old_tls_context())
    except (ssl.SSLError, ConnectionResetError, EOFError) as e:
        assert profile == "modern", "legacy refused TLS 1.0: %s" % e
        return
    with c:
        assert profile == "legacy", "modern admitted %s" % c.sock.version()
        assert c.sock.version() == "TLSv1"
        c.login(user.name, user.password)
        c.ok("QUIT")


@popgate_only
def test_send_timeout_closes_silently(user, make_popgate):
    """X-V0002: a client that stops reading mid-response meets
    timeout_send and is closed; nothing is deleted."""
    from messages import large
    uids = user.fill([large(8 * 1024 * 1024)] + five())
    pg = make_popgate({"pop3": {"timeout_send": "1s"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.login(user.name, user.password)
        c.ok("DELE 2")
        c.send(b"RETR 1\r\n")
        # Never read: popgate's writes block, and the send timeout fires.
        m = pg.wait_log(r"event=(timeout|disconnect)[^\n]*", timeout=20)
        assert m, pg.log()
    finally:
        c.close()
    assert [m[0] for m in user.messages()] == uids
