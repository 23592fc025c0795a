"""The core path (issue 2): every POP3 command against a real Dovecot,
message octets compared with the upstream copy."""

import poplib
import re
import subprocess

import pytest

import dovecot as dovecot_lib
from messages import demo_messages, five, large
from pop3client import RawPOP3, pop3_message, top_of

TIMEOUT = 30


def upstream_view(user):
    """[(uid, octets RETR must deliver)] in message-number order."""
    return [(uid, pop3_message(user.fetch(uid)))
            for uid, _, _ in user.messages()]


def test_poplib_every_command(user, popgate):
    user.fill(demo_messages())
    view = upstream_view(user)
    p = poplib.POP3(popgate.host, popgate.port, timeout=TIMEOUT)
    try:
        assert p.getwelcome().startswith(b"+OK")
        caps = p.capa()
        assert "TOP" in caps and "UIDL" in caps
        assert p.user(user.name).startswith(b"+OK")
        assert p.pass_(user.password).startswith(b"+OK")

        count, octets = p.stat()
        assert count == len(view)
        assert octets == sum(len(m) for _, m in view)

        resp, listing, _ = p.list()
        assert resp.startswith(b"+OK")
        assert listing == [b"%d %d" % (n, len(m))
                           for n, (_, m) in enumerate(view, 1)]
        assert p.list(2) == b"+OK 2 %d" % len(view[1][1])

        resp, uidl, _ = p.uidl()
        ids = [line.split()[1] for line in uidl]
        assert [line.split()[0] for line in uidl] == \
            [b"%d" % n for n in range(1, len(view) + 1)]
        assert len(set(ids)) == len(ids)
        assert p.uidl(3).split()[1:] == [b"3", ids[2]]

        for n, (_, expected) in enumerate(view, 1):
            resp, lines, size = p.retr(n)
            assert resp.startswith(b"+OK")
            assert b"".join(l + b"\r\n" for l in lines) == expected

        resp, lines, _ = p.top(1, 0)
        assert b"".join(l + b"\r\n" for l in lines) == top_of(view[0][1], 0)

        assert p.dele(1).startswith(b"+OK")
        with pytest.raises(poplib.error_proto):
            p.retr(1)
        assert p.rset().startswith(b"+OK")
        assert p.noop().startswith(b"+OK")
        assert p.retr(1)[0].startswith(b"+OK")
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()
    # RSET undid the deletion.
    assert [uid for uid, _ in view] == [m[0] for m in user.messages()]


def test_retr_exact_octets_raw(user, connect):
    """X-C0011: every line CRLF, dot-stuffed, terminator after a final CRLF."""
    user.fill(demo_messages())
    view = upstream_view(user)
    c = connect()
    c.login(user.name, user.password)
    for n, (_, expected) in enumerate(view, 1):
        c.ok("RETR %d" % n)
        raw = c.read_multiline_raw()
        stuffed = re.sub(rb"(?m)^\.", b"..", expected) + b".\r\n"
        assert raw == stuffed
    c.ok("QUIT")


@pytest.mark.popgate_only
def test_uidl_is_imap_uid(user, connect):
    """Issue 2: the unique-id is the decimal IMAP UID (X-C0007); messages
    are numbered 1..n in ascending UID order (O-C0011)."""
    uids = user.fill(five())
    c = connect()
    c.login(user.name, user.password)
    _, body = c.multi("UIDL")
    assert body == b"".join(b"%d %d\r\n" % (n, uid)
                            for n, uid in enumerate(uids, 1))
    c.ok("QUIT")


@pytest.mark.popgate_only
def test_folder_named_in_utf8(user, make_popgate):
    """upstream.folder is written in UTF-8 and sent in IMAP's modified
    UTF-7 (RFC 3501, 5.1.3): Dovecot refuses the UTF-8 form, and knows
    this folder as "Entw&APw-rfe &- Co"."""
    imap_name = '"Entw&APw-rfe &- Co"'
    with dovecot_lib.Mailbox(user.sandbox, user.name, imap_name) as mb:
        uids = [mb.append(m) for m in five()]
    user.fill(demo_messages())  # INBOX is not the folder served
    pg = make_popgate({"upstream": {"folder": "Entw\u00fcrfe & Co"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.login(user.name, user.password)
        _, body = c.multi("UIDL")
        assert body == b"".join(b"%d %d\r\n" % (n, uid)
                                for n, uid in enumerate(uids, 1))
        for n, uid in enumerate(uids, 1):
            _, got = c.multi("RETR %d" % n)
            want = user.sandbox.fetch(user.name, uid, imap_name)
            assert got == pop3_message(want)
        c.ok("DELE 1")
        assert c.cmd("QUIT").startswith(b"+OK")
    finally:
        c.close()
    left = [m[0] for m in user.sandbox.messages(user.name, imap_name)]
    assert left == uids[1:]


@pytest.mark.popgate_only
def test_missing_folder_is_sys_perm(user, make_popgate):
    """A folder the server refuses to SELECT fails the login with
    [SYS/PERM] (retrying will not help), naming the folder in ASCII."""
    user.fill(five())
    pg = make_popgate({"upstream": {"folder": "Entw\u00fcrfe"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.ok("USER " + user.name)
        resp = c.cmd("PASS " + user.password)
        assert resp == (b"-ERR [SYS/PERM] upstream folder Entw&APw-rfe "
                        b"cannot be opened\r\n"), resp
    finally:
        c.close()
    assert pg.wait_log(r"event=upstream_error [^\n]*op=SELECT"), pg.log()


def curl(*args):
    res = subprocess.run(["curl", "--silent", "--show-error",
                          "--max-time", str(TIMEOUT)] + list(args),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=TIMEOUT + 5)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def test_curl_retr_list_uidl_top(user, popgate):
    user.fill(demo_messages())
    view = upstream_view(user)
    base = "pop3://%s:%s@%s:%d/" % (user.name, user.password,
                                    popgate.host, popgate.port)
    for n, (_, expected) in enumerate(view, 1):
        assert curl(base + str(n)) == expected
    listing = curl(base)
    assert listing == b"".join(b"%d %d\r\n" % (n, len(m))
                               for n, (_, m) in enumerate(view, 1))
    assert curl("-X", "LIST", base) == listing
    uidl = curl("-X", "UIDL", base)
    assert [l.split()[0] for l in uidl.splitlines()] == \
        [b"%d" % n for n in range(1, len(view) + 1)]
    assert curl("-X", "TOP 2 0", base) == top_of(view[1][1], 0)
    assert curl("-X", "TOP 1 2", base) == top_of(view[0][1], 2)


def test_curl_user_option(user, popgate):
    """The README's form: curl -u user:pass pop3://host:port/1."""
    user.fill(five())
    expected = pop3_message(user.fetch(user.messages()[0][0]))
    out = curl("-u", "%s:%s" % (user.name, user.password),
               "pop3://%s:%d/1" % (popgate.host, popgate.port))
    assert out == expected


@pytest.mark.large
def test_20mb_message_poplib(user, popgate):
    big = large(20 * 1024 * 1024)
    user.fill([big])
    expected = pop3_message(user.fetch(user.messages()[0][0]))
    p = poplib.POP3(popgate.host, popgate.port, timeout=120)
    try:
        p.user(user.name)
        p.pass_(user.password)
        assert p.list(1) == b"+OK 1 %d" % len(expected)
        resp, lines, _ = p.retr(1)
        assert resp.startswith(b"+OK")
        got = b"".join(l + b"\r\n" for l in lines)
        assert len(got) == len(expected)
        assert got == expected
        p.quit()
    finally:
        p.close()


def test_dele_two_of_five_then_quit(user, connect):
    """X-V0006: QUIT removes exactly the marked messages."""
    uids = user.fill(five())
    c = connect()
    c.login(user.name, user.password)
    c.ok("DELE 2")
    c.ok("DELE 4")
    assert c.cmd("QUIT").startswith(b"+OK")
    assert c.at_eof()
    left = [m[0] for m in user.messages()]
    assert left == [uids[0], uids[2], uids[4]]


def test_drop_without_quit_deletes_nothing(user, connect):
    """X-C0005: a client that drops the connection deletes nothing."""
    uids = user.fill(five())
    c = connect()
    c.login(user.name, user.password)
    c.ok("DELE 1")
    c.ok("NOOP")
    c.close()
    # A fresh session proves the first one has ended before we look.
    c2 = connect()
    c2.login(user.name, user.password)
    c2.ok("QUIT")
    assert [m[0] for m in user.messages()] == uids


def test_wrong_password_is_auth(user, connect):
    user.fill(five())
    c = connect()
    c.ok("USER " + user.name)
    resp = c.cmd("PASS not-" + user.password)
    assert resp.startswith(b"-ERR [AUTH]"), resp


@pytest.mark.popgate_only
def test_auth_failed_is_logged_without_password(user, popgate, connect):
    c = connect()
    c.ok("USER " + user.name)
    c.cmd("PASS wrong-SECRET-value")
    line = popgate.wait_log(r"event=auth_failed[^\n]*")
    assert line, popgate.log()
    assert "ip=127.0.0.1" in line.group(0)
    assert "user=%s" % user.name in line.group(0)
    assert "wrong-SECRET-value" not in popgate.log()
