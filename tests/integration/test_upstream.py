"""The IMAP side: upstream TLS verification and bounded memory."""

import time

import pytest

from messages import five, large
from pop3client import RawPOP3, pop3_message
from popgate import session_pids

pytestmark = pytest.mark.popgate_only


def tls_upstream(sandbox, mode="tls", **extra):
    port = sandbox.tls_port if mode == "tls" else sandbox.port
    up = {"host": "127.0.0.1", "port": port, "tls": mode}
    up.update(extra)
    return {"upstream": up}


def login_response(pg, user):
    with RawPOP3(pg.host, pg.port) as c:
        c.ok("USER " + user.name)
        resp = c.cmd("PASS " + user.password)
        if resp.startswith(b"+OK"):
            c.ok("STAT")
            c.ok("QUIT")
        return resp


def test_upstream_self_signed_rejected_by_default(user, sandbox, make_popgate):
    """Default verification: a self-signed upstream certificate is an
    administrator's problem: -ERR [SYS/PERM] and a log line naming it."""
    pg = make_popgate(tls_upstream(sandbox))
    resp = login_response(pg, user)
    assert resp.startswith(b"-ERR [SYS/PERM]"), resp
    line = pg.wait_log(r"[^\n]*event=upstream_error[^\n]*")
    assert line, pg.log()
    assert "verif" in line.group(0).lower() or "certificate" in line.group(0).lower()


@pytest.mark.parametrize("mode", ["tls", "starttls"])
def test_upstream_tls_with_ca_file(user, sandbox, make_popgate, mode):
    """With the CA configured, implicit TLS and STARTTLS upstreams work,
    and every message arrives whole over them: small ones read ahead, a
    large one streamed in many TLS records."""
    messages = five() + [large(3 * 1024 * 1024)] + five()[:2]
    user.fill(messages)
    pg = make_popgate(tls_upstream(sandbox, mode, ca_file=sandbox.cert,
                                   server_name="localhost"))
    assert login_response(pg, user).startswith(b"+OK")
    with RawPOP3(pg.host, pg.port) as c:
        c.login(user.name, user.password)
        for i, m in enumerate(messages, 1):
            _, body = c.multi("RETR %d" % i)
            assert body == pop3_message(m), "message %d" % i
        c.ok("QUIT")


def test_upstream_wrong_name_rejected(user, sandbox, make_popgate):
    """Host name verification: the right CA but the wrong name fails."""
    pg = make_popgate(tls_upstream(sandbox, ca_file=sandbox.cert,
                                   server_name="wrong.example"))
    assert login_response(pg, user).startswith(b"-ERR [SYS/PERM]")


def test_upstream_verify_off_is_explicit(user, sandbox, make_popgate):
    """verify = false admits the self-signed server, and says so in the log."""
    pg = make_popgate(tls_upstream(sandbox, verify=False))
    assert login_response(pg, user).startswith(b"+OK")
    assert "verif" in pg.log().lower()


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@pytest.mark.large
def test_50mb_retr_memory_bounded(user, popgate):
    """Issue 4: RETR streams; the session's RSS grows by less than 4 MB
    while a 50 MB message goes through, and the bytes match."""
    user.fill([large(50 * 1024 * 1024)])
    expected = pop3_message(user.fetch(user.messages()[0][0]))
    with RawPOP3(popgate.host, popgate.port, timeout=120) as c:
        c.login(user.name, user.password)
        c.ok("STAT")
        pids = session_pids(popgate.proc.pid)
        assert len(pids) == 1, pids
        pid = pids[0]
        base = rss_kib(pid)
        assert base > 0, "cannot read the RSS of session %d" % pid
        peak = base
        c.ok("RETR 1")
        chunks = []
        last_sample = 0.0
        while True:
            line = c.read_line()
            if line == b".\r\n":
                break
            chunks.append(line[1:] if line.startswith(b".") else line)
            now = time.monotonic()
            if now - last_sample > 0.02:
                peak = max(peak, rss_kib(pid))
                last_sample = now
        got = b"".join(chunks)
        c.ok("QUIT")
    assert got == expected
    assert peak - base < 4 * 1024, "RSS grew from %d to %d KiB" % (base, peak)
