"""Listeners behind a load balancer (listen proxy_protocol = true): the
PROXY protocol header names the client, whose address then goes to the
logs (the failed-login lines fail2ban reads too) and upstream; without a
header the connection is refused, and a listener not configured for it
never believes one.  Behind a real balancer too: Debian's HAProxy."""

import os
import re
import shutil
import socket
import struct
import subprocess
import time

import pytest

from dovecot import free_port, wait_for_port
from fakeimap import FakeIMAP
from messages import five
from pop3client import RawPOP3, insecure_tls_context, pop3_message

pytestmark = pytest.mark.popgate_only

CLIENT = "203.0.113.7"


def v1_header(port=40000):
    return b"PROXY TCP4 %s 127.0.0.1 %d 110\r\n" % (CLIENT.encode(), port)


def v2_header(command=0x21, port=40001):
    body = socket.inet_aton(CLIENT) + socket.inet_aton("127.0.0.1") + \
        struct.pack("!HH", port, 995)
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([command, 0x11]) +
            struct.pack("!H", len(body)) + body)


def proxied(host, port, header, tls_context=None):
    """A POP3 connection that sends HEADER first, as a balancer does."""
    c = RawPOP3(host, port, read_greeting=False)
    c.sock.sendall(header)
    if tls_context is not None:
        c.sock = tls_context.wrap_socket(c.sock, server_hostname="localhost")
    c.greeting = c.read_line()
    return c


@pytest.fixture
def balanced(sandbox, make_popgate):
    """popgate behind a balancer: a plain and an implicit-TLS listener
    that require the header, and a plain one that takes none."""
    return make_popgate({
        "tls": {"certificate": sandbox.cert, "key": sandbox.key},
        "listen": [{"address": "127.0.0.1", "port": 0,
                    "proxy_protocol": True},
                   {"address": "127.0.0.1", "port": 0, "tls": True,
                    "proxy_protocol": True},
                   {"address": "127.0.0.1", "port": 0}]})


def test_v1_names_the_client(user, balanced):
    """Version 1 before a plain session: the session, its login and its
    failed logins are the client's, and the balancer is logged beside."""
    user.fill(five())
    with proxied(balanced.host, balanced.port, v1_header()) as c:
        assert c.greeting.startswith(b"+OK")
        c.ok("USER " + user.name)
        assert c.cmd("PASS wrong").startswith(b"-ERR")
        c.login(user.name, user.password)
        _, body = c.multi("RETR 1")
        assert body == pop3_message(user.fetch(user.messages()[0][0]))
        c.ok("QUIT")
    connect = balanced.log_lines("connect")[0]
    assert "ip=%s port=40000 proxy_ip=127.0.0.1 " % CLIENT in connect
    failed = balanced.log_lines("auth_failed")
    assert failed and "ip=%s port=40000 " % CLIENT in failed[0], failed
    assert "ip=%s port=40000 " % CLIENT in balanced.log_lines("login")[0]


def test_v2_before_implicit_tls(user, balanced):
    """Version 2, then the TLS handshake at once: exactly the header's
    octets are taken, so the ClientHello after it is intact."""
    user.fill(five())
    with proxied(balanced.host, balanced.tls_port, v2_header(),
                 tls_context=insecure_tls_context()) as c:
        assert c.greeting.startswith(b"+OK")
        c.login(user.name, user.password)
        c.ok("QUIT")
    connect = balanced.log_lines("connect")[0]
    assert "ip=%s port=40001 proxy_ip=127.0.0.1 " % CLIENT in connect
    assert "tls=yes" in connect


def test_v2_local_is_the_balancer(balanced):
    """LOCAL (a health check): served as the balancer's own connection."""
    with proxied(balanced.host, balanced.port, v2_header(command=0x20)) as c:
        assert c.greeting.startswith(b"+OK")
        c.ok("QUIT")
    connect = balanced.log_lines("connect")[0]
    assert re.search(r"ip=127\.0\.0\.1 port=\d+ proxy_ip=127\.0\.0\.1 ",
                     connect), connect


def test_missing_header_is_refused(balanced):
    """A client that speaks POP3 at once gets no greeting: the connection
    is closed and the reason logged."""
    c = RawPOP3(balanced.host, balanced.port, read_greeting=False)
    with c:
        c.sock.sendall(b"USER alice\r\n")
        try:
            assert c.sock.recv(100) == b""
        except ConnectionResetError:
            pass  # closed with the command unread: a reset, not a FIN
    failed = balanced.wait_log(r"event=proxy_header_failed [^\n]*")
    assert 'reason="not a PROXY protocol header"' in failed.group(0)


def test_plain_listener_never_believes_a_header(balanced):
    """Where the listener does not expect one, a PROXY line is a command
    like any other: nobody can claim an address by sending it."""
    with RawPOP3(balanced.host, balanced.listen_ports()[2]) as c:
        assert c.cmd(v1_header().decode().rstrip()).startswith(b"-ERR")
        c.ok("QUIT")
    connect = balanced.log_lines("connect")[0]
    assert CLIENT not in connect and "proxy_ip" not in connect


def test_forwarded_upstream(make_popgate):
    """With forward_client_ip, the upstream's per-client limits see the
    client the header named, not the balancer."""
    fake = FakeIMAP([b"Subject: x\r\n\r\nx\r\n"]).start()
    try:
        pg = make_popgate({"upstream": {"forward_client_ip": True},
                           "listen": [{"address": "127.0.0.1", "port": 0,
                                       "proxy_protocol": True}]},
                          upstream_port=fake.port)
        with proxied(pg.host, pg.port, v1_header(41000)) as c:
            c.login(fake.user, fake.password)
            c.ok("QUIT")
        ids = [l for l in fake.commands if re.match(rb"\S+ ID ", l)]
        assert ids and b'"x-originating-ip" "%s"' % CLIENT.encode() in ids[0]
        assert b'"x-originating-port" "41000"' in ids[0]
    finally:
        fake.stop()


# Debian installs it in /usr/sbin, which is not on every user's PATH.
HAPROXY = shutil.which("haproxy",
                       path=os.environ.get("PATH", "") + ":/usr/sbin")


@pytest.fixture
def haproxy(tmp_path):
    """start(backend_port, server_option) -> the port of an HAProxy in TCP
    mode on 127.0.0.1 that passes every connection to popgate with
    SERVER_OPTION (send-proxy: version 1, send-proxy-v2: version 2)."""
    procs = []

    def start(backend_port, server_option):
        port = free_port()
        cfg = tmp_path / ("haproxy-%d.cfg" % len(procs))
        cfg.write_text(
            "global\n    maxconn 100\n"
            "defaults\n    mode tcp\n    timeout connect 5s\n"
            "    timeout client 30s\n    timeout server 30s\n"
            "frontend pop3\n    bind 127.0.0.1:%d\n"
            "    default_backend popgate\n"
            "backend popgate\n    server pg 127.0.0.1:%d %s\n"
            % (port, backend_port, server_option))
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        procs.append(proc)
        assert wait_for_port("127.0.0.1", port, time.monotonic() + 10,
                             lambda: proc.poll() is None), "haproxy did not start"
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.skipif(HAPROXY is None, reason="no haproxy")
@pytest.mark.parametrize("option", ["send-proxy", "send-proxy-v2"])
def test_behind_haproxy(user, make_popgate, haproxy, option):
    """HAProxy in front, in either version: the session is the client's
    own connection (its port, not the balancer's), and works."""
    user.fill(five())
    pg = make_popgate({"listen": [{"address": "127.0.0.1", "port": 0,
                                   "proxy_protocol": True}]})
    port = haproxy(pg.port, option)
    with RawPOP3("127.0.0.1", port) as c:
        client_port = c.sock.getsockname()[1]
        c.login(user.name, user.password)
        _, body = c.multi("RETR 1")
        assert body == pop3_message(user.fetch(user.messages()[0][0]))
        c.ok("QUIT")
    # Its readiness probe may have reached popgate as a session too.
    mine = "ip=127.0.0.1 port=%d proxy_ip=127.0.0.1 " % client_port
    assert [l for l in pg.log_lines("connect") if mine in l], pg.log()


def test_client_reaches_dovecot(user, sandbox, make_popgate):
    """End to end: the client the balancer's header names goes upstream in
    IMAP ID, sent with the login, and Dovecot (which trusts popgate's
    address) logs the login as that client's."""
    user.fill(five())
    pg = make_popgate({"upstream": {"forward_client_ip": True},
                       "listen": [{"address": "127.0.0.1", "port": 0,
                                   "proxy_protocol": True}]})
    with proxied(pg.host, pg.port, v1_header(42000)) as c:
        c.login(user.name, user.password)
        c.ok("QUIT")
    pattern = re.compile(r"imap-login: Info: Login: user=<%s>[^\n]*rip=%s[,\s]"
                         % (re.escape(user.name), re.escape(CLIENT)))
    deadline = time.monotonic() + 10
    while True:
        with open(sandbox.log_path, errors="replace") as f:
            if pattern.search(f.read()):
                break
        assert time.monotonic() < deadline, sandbox.log_tail()
        time.sleep(0.05)
