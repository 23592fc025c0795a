"""Upstream faults in the middle of a message (issue 4): the client never
gets a terminator for an incomplete message, nothing is deleted, and
popgate keeps serving new sessions."""

import socket

import pytest

from fakeimap import FAULTS, FakeIMAP
from pop3client import RawPOP3, pop3_message

pytestmark = pytest.mark.popgate_only

# Larger than FAKE's FAULT_SIZE, so the fault lands in the middle of the
# body or right after it, once the client has had "+OK" and octets.
MESSAGE_SIZE = 6 * 1024 * 1024


def big_message():
    head = b"From: fault@example.org\r\nSubject: faults\r\n\r\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
    return head + line * (MESSAGE_SIZE // len(line))


def read_until_eof(c, limit=60):
    """Everything the server sends until it closes or ends a multi-line
    response (bounded by the socket timeout); returns (octets, closed)."""
    c.sock.settimeout(limit)
    data = c.buf
    c.buf = b""
    try:
        while not data.endswith(b"\r\n.\r\n"):
            chunk = c.sock.recv(1 << 16)
            if not chunk:
                return data, True
            data += chunk
        return data, False
    except socket.timeout:
        return data, False
    except ConnectionResetError:
        return data, True


def unstuff(raw):
    """The body of a multi-line response sent as RAW (terminator included)."""
    lines = raw[:-len(b".\r\n")].split(b"\r\n")[:-1]
    return b"".join((l[1:] if l.startswith(b".") else l) + b"\r\n"
                    for l in lines)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_mid_message_no_false_terminator(fault, make_popgate):
    small = b"From: a@example.org\r\nSubject: small\r\n\r\nsmall\r\n"
    fake = FakeIMAP([big_message(), small], fault=fault).start()
    try:
        pg = make_popgate({"upstream": {"command_timeout": "3s"}},
                          upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            resp = c.cmd("RETR 1")
            if resp.startswith(b"+OK"):
                data, closed = read_until_eof(c)
                assert fake.fault_done.is_set(), "the fault never triggered"
                if not closed:
                    # Refused before the first octet reached the client,
                    # then read whole on a new connection.
                    assert data.endswith(b"\r\n.\r\n"), \
                        "popgate neither finished nor closed"
                    assert unstuff(data) == pop3_message(big_message())
                    assert pg.log_lines("upstream_reconnected")
                else:
                    assert not data.endswith(b"\r\n.\r\n")
                    assert b"\r\n.\r\n" not in data
                    # At most the message itself: never padded to look
                    # whole.
                    assert len(data) <= len(big_message())
            else:
                # Refusing before the first octet is honest too.
                assert resp.startswith(b"-ERR"), resp
        assert fake.changes == [], fake.changes
        # New sessions still work, and get whole messages.
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            _, body = c.multi("RETR 2")
            assert body == pop3_message(small)
            c.ok("QUIT")
    finally:
        fake.stop()


@pytest.mark.parametrize("error", [-300, 300])
def test_wrong_upstream_size_is_logged_and_message_whole(error, make_popgate):
    """An upstream RFC822.SIZE that is wrong (estimated, as Exchange does by
    default) does not cut or pad the message: RETR delivers every octet,
    then the terminator, and the mismatch is logged with user and UID."""
    msg = (b"From: size@example.org\r\nSubject: estimate\r\n\r\n" +
           b"a body line of some length\r\n" * 200)
    fake = FakeIMAP([msg], size_error=error).start()
    try:
        pg = make_popgate(upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert c.ok("LIST 1") == b"+OK 1 %d\r\n" % (len(msg) + error)
            _, body = c.multi("RETR 1")
            assert body == pop3_message(msg)
            c.ok("QUIT")
        pg.stop()
        log = open(pg.log_path, encoding="utf-8", errors="replace").read()
        assert ("event=size_mismatch user=fake uid=1 listed=%d sent=%d"
                % (len(msg) + error, len(msg))) in log, log[-2000:]
    finally:
        fake.stop()
