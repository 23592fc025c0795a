"""Upstream faults in the middle of a message (issue 4): the client never
gets a terminator for an incomplete message, nothing is deleted, and
popgate keeps serving new sessions.  A connection lost inside a message
goes on from where it was cut on a new connection, only if the new answer
repeats the end of what the client already has."""

import re
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
                    # Read whole on a new connection: again, when refused
                    # before the first octet reached the client, or from
                    # where the connection was lost.
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


SMALL = b"From: a@example.org\r\nSubject: small\r\n\r\nsmall\r\n"


@pytest.mark.parametrize("fault", ["cut", "stall", "bye", "byecut",
                                   "shortcut"])
def test_lost_mid_message_resumed(fault, make_popgate):
    """The connection lost inside the message (closed, stalled past the
    command timeout, a BYE written into the literal, the response's end
    read as the literal's) or right after its body (BYE).  The last 512
    octets read were held back, so what ended the connection never reached
    the client; the rest is asked for on a new connection from 512 octets
    before what the client has, which the answer must repeat.  The client
    gets the message whole, once, and the session goes on."""
    msg = big_message()
    fake = FakeIMAP([msg, SMALL], fault=fault).start()
    try:
        pg = make_popgate({"upstream": {"command_timeout": "3s"}},
                          upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert c.multi("RETR 1")[1] == pop3_message(msg)
            assert fake.fault_done.is_set()
            assert c.multi("RETR 2")[1] == pop3_message(SMALL)
            c.ok("QUIT")
        resumed = pg.log_lines("upstream_fetch_resumed uid=1")
        assert len(resumed) == 1, pg.log()[-3000:]
        cut = int(re.search(r"octet=(\d+)", resumed[0]).group(1))
        if fault == "bye":
            assert cut == len(msg)  # the whole body had come
        elif fault != "stall":  # which leaves some under the low-water mark
            # Half the message and what ended the connection were read;
            # the last 512 octets of that never reached the client.
            junk = {"byecut": 29, "shortcut": 19}.get(fault, 0)
            assert cut == len(msg) // 2 + junk - 512
        asked = b"(BODY.PEEK[]<%d.%d>)" % (cut - 512, len(msg) - cut + 512)
        assert [l for l in fake.commands if asked in l], fake.commands
        assert len(pg.log_lines("upstream_reconnected")) == 1
        # The QUIT sets \\Seen on what was retrieved, and removes nothing.
        assert fake.changes == [b"3 UID STORE 1:2 +FLAGS.SILENT (\\Seen)\r\n"], \
            fake.changes
    finally:
        fake.stop()


@pytest.mark.parametrize("case", ["noisecut", "changed", "reconnect off"])
def test_lost_mid_message_not_completed(case, make_popgate):
    """What cannot be shown to be the message's rest is never spliced on:
    octets that are not the message, more of them than were held back,
    then a close; a message that changed meanwhile; reconnection turned
    off.  The client connection is closed without a terminator."""
    msg = big_message()
    fake = FakeIMAP([msg, SMALL],
                    fault="noisecut" if case == "noisecut" else "cut",
                    change_after_fault=case == "changed").start()
    try:
        pg = make_popgate({"upstream": {"command_timeout": "3s",
                                        "reconnect": case != "reconnect off"}},
                          upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            c.ok("RETR 1")
            data, closed = read_until_eof(c)
            assert closed
            assert b"\r\n.\r\n" not in data
            assert len(data) < len(msg)
        if case == "reconnect off":
            assert not pg.log_lines("upstream_fetch_resumed")
        else:
            assert pg.log_lines("upstream_fetch_resumed uid=1")
            assert [l for l in pg.log_lines("upstream_error")
                    if "not the rest of the message" in l], pg.log()[-3000:]
        assert fake.changes == [], fake.changes
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert c.multi("RETR 2")[1] == pop3_message(SMALL)
            c.ok("QUIT")
    finally:
        fake.stop()


LONG_HEAD = b"From: top@example.org\r\nSubject: long lines\r\n\r\n"


def long_lines():
    """Lines of 1,002 octets, longer than a TOP's estimate, so that a TOP
    reads a second range (the one the scripted server cuts)."""
    return LONG_HEAD + b"".join(b"%06d " % n + b"y" * 993 + b"\r\n"
                                for n in range(4000))


def top_of_long_lines(lines):
    return pop3_message(long_lines()[:len(LONG_HEAD) + lines * 1002])


@pytest.mark.parametrize("fault", ["cut", "drop"])
def test_lost_in_top_range_resumed(fault, make_popgate):
    """The connection lost during a TOP's second range, inside its literal
    or before any of it came: the range goes on from there, or is asked
    for again, on a new connection."""
    fake = FakeIMAP([long_lines()], fault=fault).start()
    try:
        pg = make_popgate(upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            assert c.multi("TOP 1 3000")[1] == top_of_long_lines(3000)
            c.ok("QUIT")
        assert fake.fault_done.is_set()
        resumed = pg.log_lines("upstream_fetch_resumed uid=1")
        assert len(resumed) == 1, pg.log()[-3000:]
        # The first range is the 16 KiB and 128 octets a line a TOP
        # estimates; the second, twice as long, is cut half-way, less what
        # was held back.
        first = 16 * 1024 + 3000 * 128
        cut = {"drop": first, "cut": first + first - 512}[fault]
        assert "octet=%d" % cut in resumed[0], resumed
    finally:
        fake.stop()


def test_lost_after_top_lines_sent(make_popgate):
    """The connection cut after every line a TOP wants has gone out, while
    the rest of its range is read and dropped: the TOP is whole, nothing
    is asked again, and the next command reconnects."""
    fake = FakeIMAP([long_lines()], fault="cut").start()
    try:
        pg = make_popgate(upstream_port=fake.port)
        with RawPOP3(pg.host, pg.port) as c:
            c.login(fake.user, fake.password)
            # The second range starts before line 30 and is cut after it.
            assert c.multi("TOP 1 30")[1] == top_of_long_lines(30)
            assert fake.fault_done.is_set()
            assert c.multi("TOP 1 5")[1] == top_of_long_lines(5)
            c.ok("QUIT")
        assert not pg.log_lines("upstream_fetch_resumed")
        assert len(pg.log_lines("upstream_reconnected")) == 1
    finally:
        fake.stop()
