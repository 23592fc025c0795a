"""A session whose upstream connection is lost after the login (Dovecot's
own `doveadm kick`, as a restart or failover would do it) logs in again
and carries on, if the folder is still the one of the snapshot; nothing is
deleted that was not marked, and what cannot be resumed fails honestly."""

import imaplib
import re
import socket
import time

import pytest

from messages import five, large
from pop3client import RawPOP3, pop3_message

pytestmark = pytest.mark.popgate_only


def kick(sandbox, user):
    """Close the user's IMAP connections and wait (bounded) until Dovecot
    no longer lists any, so the next command meets a closed connection."""
    sandbox.doveadm("kick", user.name)
    deadline = time.monotonic() + 10
    while user.name.encode() in sandbox.doveadm("who"):
        assert time.monotonic() < deadline, "doveadm kick left a session"
        time.sleep(0.05)


def refused_after_kick(sandbox, user, c, reason):
    """Kick the session's upstream connection: the next RETR fails with
    [SYS/TEMP] saying REASON, and so does the QUIT, whose answer is
    returned."""
    kick(sandbox, user)
    resp = c.cmd("RETR 2")
    assert resp.startswith(b"-ERR [SYS/TEMP]"), resp
    assert reason in resp, resp
    resp = c.cmd("QUIT")
    assert resp.startswith(b"-ERR [SYS/TEMP]"), resp
    return resp


def bigger():
    """Five messages above the read-ahead's 64 KiB, so that every RETR
    goes upstream."""
    return [large(100000 + 1000 * n) for n in range(5)]


def old_password_works(sandbox, user):
    conn = imaplib.IMAP4(sandbox.host, sandbox.port)
    try:
        conn.login(user.name, user.password)
        return True
    except imaplib.IMAP4.error:
        return False
    finally:
        conn.shutdown()


def session(pg, user):
    c = RawPOP3(pg.host, pg.port)
    c.login(user.name, user.password)
    return c


def test_lost_connection_resumed(sandbox, user, make_popgate):
    """Kicked before a RETR and again before QUIT: the RETR and the UPDATE
    are done on new connections, with the snapshot's ids and numbers."""
    msgs = bigger()
    uids = user.fill(msgs)
    pg = make_popgate()
    with session(pg, user) as c:
        _, uidl = c.multi("UIDL")
        assert c.multi("RETR 1")[1] == pop3_message(msgs[0])
        kick(sandbox, user)
        assert c.multi("RETR 2")[1] == pop3_message(msgs[1])
        assert c.multi("UIDL")[1] == uidl
        c.ok("DELE 3")
        kick(sandbox, user)
        assert c.ok("QUIT")
    left = {uid: flags for uid, _, flags in user.messages()}
    assert sorted(left) == uids[:2] + uids[3:]
    assert r"\Seen" in left[uids[1]]
    attempts = [l for l in pg.log_lines("upstream_reconnected")]
    assert len(attempts) == 2, pg.log()[-3000:]
    assert "attempt=2" in attempts[1]


@pytest.mark.parametrize("mode", ["none", "tls"])
def test_kicked_mid_message_resumed(sandbox, user, make_popgate, mode):
    """Dovecot's connection closed in the middle of a RETR: the client
    stops reading, so the 40 MB transfer stalls inside the literal, more
    than the sockets on the way hold, and the kick lands there.  The rest
    comes from a new connection (over TLS verified like the first), and
    the client gets the message whole."""
    msg = large(40 * 1024 * 1024)
    user.fill([msg])
    if mode == "tls":
        pg = make_popgate({"upstream": {
            "host": "127.0.0.1", "port": sandbox.tls_port, "tls": "tls",
            "ca_file": sandbox.cert, "server_name": "localhost"}})
    else:
        pg = make_popgate()
    with session(pg, user) as c:
        # A small receive window, so little of the message waits here.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.ok("RETR 1")
        c._fill()
        kick(sandbox, user)
        assert c.read_multiline() == pop3_message(msg)
        c.ok("QUIT")
    resumed = pg.log_lines("upstream_fetch_resumed")
    assert len(resumed) == 1, pg.log()[-3000:]
    assert len(pg.log_lines("upstream_reconnected")) == 1


@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_lost_tls_connection_resumed(sandbox, user, make_popgate, mode):
    """The same over an upstream in TLS, as hosted mailboxes are reached:
    the new connection is verified like the first (CA, server name) and
    the message read on it arrives whole."""
    msgs = bigger()
    user.fill(msgs)
    port = sandbox.tls_port if mode == "tls" else sandbox.port
    pg = make_popgate({"upstream": {
        "host": "127.0.0.1", "port": port, "tls": mode,
        "ca_file": sandbox.cert, "server_name": "localhost"}})
    with session(pg, user) as c:
        assert c.multi("RETR 1")[1] == pop3_message(msgs[0])
        kick(sandbox, user)
        assert c.multi("RETR 4")[1] == pop3_message(msgs[3])
        c.ok("QUIT")
    assert len(pg.log_lines("upstream_reconnected")) == 1, pg.log()[-3000:]


def test_idle_session_reconnects_by_keepalive(sandbox, user, make_popgate):
    """The keepalive finds the lost connection while the client idles and
    makes it again, so the next command does not wait for it."""
    msgs = bigger()
    user.fill(msgs)
    pg = make_popgate({"upstream": {"keepalive": "1s"}})
    with session(pg, user) as c:
        kick(sandbox, user)
        pg.wait_log(r"event=upstream_reconnected .*attempt=1", timeout=10)
        assert c.multi("RETR 5")[1] == pop3_message(msgs[4])
        c.ok("QUIT")


def test_folder_reset_is_not_resumed(sandbox, user, make_popgate):
    """A folder whose UIDVALIDITY changed meanwhile may number other
    messages with the snapshot's UIDs: no command is served from it, and
    the QUIT deletes nothing."""
    uids = user.fill(five())
    pg = make_popgate()
    with session(pg, user) as c:
        c.ok("DELE 1")
        with user.mailbox() as mb:
            _, data = mb.conn.status("INBOX", "(UIDVALIDITY)")
        old = int(data[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))
        sandbox.doveadm("mailbox", "update", "-u", user.name,
                        "--uid-validity", str(old + 1000), "INBOX")
        resp = refused_after_kick(sandbox, user, c, b"reset")
        assert b"nothing was changed" in resp
    assert sorted(uid for uid, _, _ in user.messages()) == uids
    assert pg.log_lines("upstream_resume_refused"), pg.log()[-3000:]


def test_folder_gone_is_not_resumed(sandbox, user, make_popgate):
    """The folder the session was serving was deleted meanwhile: the new
    connection cannot SELECT it, the command fails with [SYS/TEMP] (it was
    there at login) and nothing else is touched."""
    sandbox.doveadm("mailbox", "create", "-u", user.name, "Archive")
    for m in five():
        sandbox.append(user.name, m, folder="Archive")
    inbox = user.fill(five())
    pg = make_popgate({"upstream": {"folder": "Archive"}})
    with session(pg, user) as c:
        c.ok("DELE 1")
        sandbox.doveadm("mailbox", "delete", "-u", user.name, "Archive")
        refused_after_kick(sandbox, user, c, b"cannot be opened again")
    assert sorted(uid for uid, _, _ in user.messages()) == inbox
    assert re.search(r"event=upstream_error .*op=SELECT folder=Archive",
                     pg.log()), pg.log()[-3000:]


def test_password_changed_is_not_resumed(sandbox, user, make_popgate):
    """The session's password no longer works upstream: the command fails
    with [SYS/TEMP] (the client logged in rightly; -ERR [AUTH] would make
    it ask its user for a password) and nothing is deleted."""
    uids = user.fill(bigger())
    pg = make_popgate()
    with session(pg, user) as c:
        c.ok("DELE 1")
        sandbox.add_user(user.name, user.password + "-changed")
        # Dovecot looks at its passwd-file at most once a second: wait
        # (bounded) until it refuses the old password.
        deadline = time.monotonic() + 10
        while old_password_works(sandbox, user):
            assert time.monotonic() < deadline, "password never changed"
            time.sleep(0.1)
        refused_after_kick(sandbox, user, c, b"refused the login again")
    assert sorted(uid for uid, _, _ in user.messages()) == uids


def test_reconnect_off(sandbox, user, make_popgate):
    """upstream.reconnect = false: a lost connection fails every later
    command with [SYS/TEMP], and nothing is deleted."""
    uids = user.fill(five())
    pg = make_popgate({"upstream": {"reconnect": False}})
    with session(pg, user) as c:
        c.ok("DELE 1")
        kick(sandbox, user)
        assert c.cmd("RETR 2").startswith(b"-ERR [SYS/TEMP]")
        assert c.cmd("RETR 2").startswith(b"-ERR [SYS/TEMP]")
        assert c.cmd("QUIT").startswith(b"-ERR [SYS/TEMP]")
    assert sorted(uid for uid, _, _ in user.messages()) == uids
    assert not pg.log_lines("upstream_reconnected")


def test_reconnects_are_bounded(sandbox, user, make_popgate):
    """At most 3 reconnections per session: an upstream that keeps
    dropping it is not hammered for ever."""
    msgs = bigger()
    user.fill(msgs)
    pg = make_popgate()
    with session(pg, user) as c:
        for n in (1, 2, 3):
            kick(sandbox, user)
            assert c.multi("RETR %d" % n)[1] == pop3_message(msgs[n - 1])
        kick(sandbox, user)
        assert c.cmd("RETR 4").startswith(b"-ERR [SYS/TEMP]")
        c.cmd("QUIT")
    assert len(pg.log_lines("upstream_reconnected")) == 3
