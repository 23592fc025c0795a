"""Real POP3 clients against popgate, each download compared with the
upstream copy: fetchmail and getmail6 (keep mode, a second run fetches
nothing new), and the Outlook command sequence from MS-STANOPOP3."""

import os
import poplib
import re
import shutil
import stat
import subprocess
import time

import pytest

from messages import demo_messages, five
from pop3client import RawPOP3, insecure_tls_context, pop3_message

TIMEOUT = 60
MODES = ["plain", "stls", "tls"]


@pytest.fixture
def secure_popgate(sandbox, make_popgate):
    """popgate with a certificate: a plain listener (with STLS) and an
    implicit-TLS one."""
    return make_popgate({
        "tls": {"certificate": sandbox.cert, "key": sandbox.key},
        "listen": [{"address": "127.0.0.1", "port": 0},
                   {"address": "127.0.0.1", "port": 0, "tls": True}]})


def open_client(pg, mode):
    if mode == "tls":
        return RawPOP3(pg.host, pg.tls_port, tls_context=insecure_tls_context())
    c = RawPOP3(pg.host, pg.port)
    if mode == "stls":
        c.ok("STLS")
        c.sock = insecure_tls_context().wrap_socket(
            c.sock, server_hostname="localhost")
    return c


def run(cmd, env=None, ok_codes=(0,)):
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, timeout=TIMEOUT)
    out = res.stdout.decode(errors="replace")
    assert res.returncode in ok_codes, "%s -> %d\n%s" % (cmd, res.returncode, out)
    return res.returncode, out


def expected_set(user, line_end=b"\r\n"):
    return sorted(pop3_message(user.fetch(uid)).replace(b"\r\n", line_end)
                  for uid, _, _ in user.messages())


SAVE_SCRIPT = r'''
import os, sys, time
d = sys.argv[1]
data = sys.stdin.buffer.read()
n = len(os.listdir(d))
with open(os.path.join(d, "%06d.eml" % n), "wb") as f:
    f.write(data)
'''


@pytest.mark.popgate_only
@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="no fetchmail")
@pytest.mark.parametrize("mode", MODES)
def test_fetchmail_keep_mode(user, secure_popgate, tmp_path, mode):
    popgate = secure_popgate
    user.fill(demo_messages())
    out = tmp_path / "out"
    out.mkdir()
    save = tmp_path / "save.py"
    save.write_text(SAVE_SCRIPT)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        'set no syslog\n'
        'set invisible\n'
        'poll 127.0.0.1 service %d protocol pop3 uidl auth password\n'
        '  user "%s" there is "%s" here password "%s"\n'
        '  keep no sslcertck %s\n'
        '  mda "/usr/bin/python3 %s %s"\n'
        % (popgate.tls_port if mode == "tls" else popgate.port,
           user.name, "root", user.password,
           {"plain": "sslproto \'\'", "stls": "sslproto tls1.2+",
            "tls": "ssl"}[mode], save, out))
    rc.chmod(stat.S_IRUSR | stat.S_IWUSR)
    env = dict(os.environ, HOME=str(tmp_path))
    cmd = ["fetchmail", "--nodetach", "--fetchmailrc", str(rc),
           "--idfile", str(tmp_path / "fetchids"), "--pidfile",
           str(tmp_path / "fetchmail.pid"), "-v"]
    run(cmd, env)
    got = sorted(p.read_bytes() for p in out.iterdir())
    # fetchmail hands messages to an MDA with LF line ends.
    assert got == expected_set(user, b"\n")
    # Second run: the UIDLs are known, nothing new (fetchmail exits 1).
    run(cmd, env, ok_codes=(1,))
    assert len(list(out.iterdir())) == len(got)
    assert len(user.messages()) == len(got)


@pytest.mark.popgate_only
@pytest.mark.skipif(shutil.which("getmail") is None, reason="no getmail6")
@pytest.mark.parametrize("mode", ["plain", "tls"])  # getmail6 has no STLS
def test_getmail_simple_pop3_retriever(user, secure_popgate, tmp_path, mode):
    popgate = secure_popgate
    user.fill(five())
    out = tmp_path / "out"
    out.mkdir()
    save = tmp_path / "save.py"
    save.write_text(SAVE_SCRIPT)
    gdir = tmp_path / "getmail"
    gdir.mkdir()
    rc = gdir / "getmailrc"
    # An external MDA: getmail's Maildir destination refuses to run as
    # root, and the tests may.
    rc.write_text(
        "[retriever]\n"
        "type = %s\n"
        "server = 127.0.0.1\n"
        "port = %d\n"
        "username = %s\n"
        "password = %s\n"
        "timeout = 30\n"
        "[destination]\n"
        "type = MDA_external\n"
        "path = /usr/bin/python3\n"
        "arguments = (\"%s\", \"%s\")\n"
        "allow_root_commands = true\n"
        "[options]\n"
        "read_all = false\n"
        "delete = false\n"
        "delivered_to = false\n"
        "received = false\n"
        "message_log_syslog = false\n"
        % ("SimplePOP3SSLRetriever" if mode == "tls" else "SimplePOP3Retriever",
           popgate.tls_port if mode == "tls" else popgate.port,
           user.name, user.password, save, out))
    cmd = ["getmail", "--getmaildir", str(gdir), "--rcfile", str(rc)]
    run(cmd)
    got = sorted(p.read_bytes() for p in out.iterdir())
    # getmail hands messages over with LF line ends and a Return-Path.
    got = [re.sub(rb"\AReturn-Path: [^\n]*\n", b"", m) for m in got]
    assert sorted(got) == expected_set(user, b"\n")
    run(cmd)
    assert len(list(out.iterdir())) == len(got)
    assert len(user.messages()) == len(got)


@pytest.mark.popgate_only
@pytest.mark.parametrize("mode", MODES)
def test_outlook_session_transcript(user, secure_popgate, mode):
    """The sequence Outlook sends (MS-STANOPOP3; O-V0003, O-V0006,
    O-V0007: no RSET, no argument forms of LIST/UIDL): every command one
    response, CRLF everywhere, STAT/LIST without extra text (X-V0004,
    X-V0005), messages byte for byte, deletion at QUIT."""
    uids = user.fill(five())
    expected = [pop3_message(user.fetch(u)) for u in uids]
    c = open_client(secure_popgate, mode)
    if mode != "stls":
        assert c.greeting.startswith(b"+OK")
    _, caps = c.multi("CAPA")
    assert b"UIDL" in caps.splitlines()
    c.login(user.name, user.password)
    assert c.ok("STAT") == b"+OK %d %d\r\n" % (
        len(expected), sum(len(m) for m in expected))
    _, listing = c.multi("LIST")
    assert listing == b"".join(b"%d %d\r\n" % (n, len(m))
                               for n, m in enumerate(expected, 1))
    _, uidl = c.multi("UIDL")
    assert len(uidl.splitlines()) == len(expected)
    for n, m in enumerate(expected, 1):
        _, body = c.multi("RETR %d" % n)
        assert body == m
    for n in (1, 2):
        c.ok("DELE %d" % n)
    assert c.cmd("QUIT").startswith(b"+OK")
    assert c.at_eof()
    c.close()
    assert [m[0] for m in user.messages()] == uids[2:]


@pytest.mark.popgate_only
@pytest.mark.parametrize("mode", MODES)
def test_poplib_over_each_transport(user, secure_popgate, mode):
    """poplib over plain, STLS and implicit TLS; messages byte for byte."""
    pg = secure_popgate
    uids = user.fill(five())
    if mode == "tls":
        p = poplib.POP3_SSL(pg.host, pg.tls_port, timeout=TIMEOUT,
                            context=insecure_tls_context())
    else:
        p = poplib.POP3(pg.host, pg.port, timeout=TIMEOUT)
        if mode == "stls":
            p.stls(context=insecure_tls_context())
    try:
        p.user(user.name)
        p.pass_(user.password)
        for n, uid in enumerate(uids, 1):
            _, lines, _ = p.retr(n)
            got = b"".join(l + b"\r\n" for l in lines)
            assert got == pop3_message(user.fetch(uid))
        p.quit()
    finally:
        p.close()


def curl_pop3(pg, user, mode, *args, path=""):
    """curl against popgate in MODE, verifying popgate's certificate (the
    sandbox's, issued for 127.0.0.1) as a careful client would."""
    scheme, port = ("pop3s", pg.tls_port) if mode == "tls" else ("pop3", pg.port)
    cmd = ["curl", "--silent", "--show-error", "--max-time", str(TIMEOUT),
           "--cacert", pg.config["tls"]["certificate"],
           "-u", "%s:%s" % (user.name, user.password)]
    if mode == "stls":
        cmd.append("--ssl-reqd")  # STLS or fail, never plaintext
    res = subprocess.run(cmd + list(args) +
                         ["%s://%s:%d/%s" % (scheme, pg.host, port, path)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=TIMEOUT + 5)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


@pytest.mark.popgate_only
@pytest.mark.parametrize("mode", MODES)
def test_curl_over_each_transport(user, secure_popgate, mode):
    """curl over plain, STLS (--ssl-reqd) and implicit TLS (pop3s): RETR of
    every message byte for byte, LIST, UIDL and TOP through -X."""
    pg = secure_popgate
    uids = user.fill(five())
    expected = [pop3_message(user.fetch(u)) for u in uids]
    for n, m in enumerate(expected, 1):
        assert curl_pop3(pg, user, mode, path=str(n)) == m
    listing = b"".join(b"%d %d\r\n" % (n, len(m))
                       for n, m in enumerate(expected, 1))
    assert curl_pop3(pg, user, mode) == listing
    assert curl_pop3(pg, user, mode, "-X", "LIST") == listing
    uidl = curl_pop3(pg, user, mode, "-X", "UIDL").splitlines()
    assert [l.split()[0] for l in uidl] == \
        [b"%d" % n for n in range(1, len(expected) + 1)]
    top = curl_pop3(pg, user, mode, "-X", "TOP 1 0")
    assert top == expected[0][:expected[0].index(b"\r\n\r\n") + 4]


def run_in_pty(cmd, env, timeout=TIMEOUT):
    """Run a full-screen program on a pseudo-terminal until it exits;
    returns (exit status or None on timeout, its screen output)."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execvpe(cmd[0], cmd, env)
        finally:
            os._exit(127)
    output = b""
    status = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                output += data
                if data:
                    continue
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(st)
                break
    finally:
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    return status, output.decode(errors="replace")


@pytest.mark.popgate_only
@pytest.mark.skipif(shutil.which("neomutt") is None, reason="no neomutt")
@pytest.mark.parametrize("mode", MODES)
def test_neomutt_copies_every_message(user, sandbox, secure_popgate,
                                      tmp_path, mode):
    """neomutt, driven headless on a pseudo-terminal: open the POP3 mailbox,
    copy every message to a maildir, quit without deleting."""
    pg = secure_popgate
    user.fill(demo_messages())
    out = tmp_path / "out"
    # No "create it?" prompts: they would eat the pushed keys.
    for sub in ("cur", "new", "tmp"):
        (out / sub).mkdir(parents=True)
    (tmp_path / "Mail").mkdir()
    rc = tmp_path / "neomuttrc"
    rc.write_text(
        'set pop_user="%s"\n'
        'set pop_pass="%s"\n'
        "set mbox_type=Maildir\n"
        "set confirmcreate=no\n"
        "set confirmappend=no\n"
        "set quit=yes\n"
        "set pop_delete=no\n"
        "set move=no\n"
        "set auto_tag=yes\n"
        "set wait_key=no\n"
        'set header_cache=""\n'
        'set message_cachedir=""\n'
        'set certificate_file="%s"\n'
        "set ssl_starttls=%s\n"
        "set ssl_force_tls=%s\n"
        % (user.name, user.password, sandbox.cert,
           "yes" if mode == "stls" else "no",
           "yes" if mode == "stls" else "no"))
    url = ("pops://%s@127.0.0.1:%d/" % (user.name, pg.tls_port) if mode == "tls"
           else "pop://%s@127.0.0.1:%d/" % (user.name, pg.port))
    keys = "<tag-pattern>~A<enter><copy-message>%s<enter><quit>" % out
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm")
    status, screen = run_in_pty(["neomutt", "-n", "-F", str(rc), "-f", url,
                                 "-e", 'push "%s"' % keys], env)
    assert status == 0, screen[-2000:]
    got = []
    for path in out.glob("*/*"):
        head, sep, body = path.read_bytes().partition(b"\n\n")
        # neomutt adds these two headers when it copies a message.
        head = re.sub(rb"(?m)^(Content-Length|Lines): \d+\n?", b"", head)
        got.append(head.rstrip(b"\n") + sep + body)
    assert sorted(got) == expected_set(user, b"\n"), screen[-2000:]
    assert len(user.messages()) == len(got)
