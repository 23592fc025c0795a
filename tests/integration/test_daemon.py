"""The daemon around the sessions: configuration check, limits, upstream
failures, signals and the event log."""

import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import popgate as popgate_lib
from dovecot import free_port
from messages import five, large
from pop3client import RawPOP3, insecure_tls_context

pytestmark = pytest.mark.popgate_only

TOP = popgate_lib.TOP


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_config_check_accepts_generated(tmp_path, sandbox):
    cfg = popgate_lib.base_config(sandbox.port, free_port())
    path = write(tmp_path / "ok.conf", popgate_lib.render_config(cfg))
    status, err = popgate_lib.check_config(path)
    assert status == 0, err
    assert "popgate: configuration %s is ok" % path in err


def test_config_check_rejects_unknown_key_with_line(tmp_path, sandbox):
    cfg = popgate_lib.base_config(sandbox.port, free_port())
    lines = popgate_lib.render_config(cfg).splitlines()
    at = lines.index("upstream = {") + 1
    lines.insert(at + 1, "  no_such_key = 1;")
    path = write(tmp_path / "bad.conf", "\n".join(lines) + "\n")
    status, err = popgate_lib.check_config(path)
    assert status == 1
    # Lines count from 1; the inserted line is lines[at + 1].
    assert "%s:%d:" % (path, at + 2) in err, err
    assert "no_such_key" in err


@pytest.mark.parametrize("group,key,value", [
    ("pop3", "max_command_size", "39"),
    ("pop3", "login_type", '"sometimes"'),
    ("daemon", "drain_time", '"30 seconds"'),
    ("daemon", "sessions_per_process", "0"),
    ("upstream", "tls", '"maybe"'),
])
def test_config_check_rejects_bad_values(tmp_path, sandbox, group, key, value):
    cfg = popgate_lib.base_config(sandbox.port, free_port())
    cfg[group].pop(key, None)
    lines = popgate_lib.render_config(cfg).splitlines()
    at = lines.index("%s = {" % group) + 1
    lines.insert(at, "  %s = %s;" % (key, value))
    path = write(tmp_path / "bad.conf", "\n".join(lines) + "\n")
    status, err = popgate_lib.check_config(path)
    assert status == 1
    assert "%s:%d:" % (path, at + 1) in err, err


def test_config_check_tls_listener_needs_certificate(tmp_path, sandbox):
    cfg = popgate_lib.base_config(sandbox.port, free_port())
    cfg["listen"].append({"address": "127.0.0.1", "port": free_port(),
                          "tls": True})
    path = write(tmp_path / "notls.conf", popgate_lib.render_config(cfg))
    status, err = popgate_lib.check_config(path)
    assert status == 1, err
    assert path in err


def test_bad_upstream_ca_file_fails_check_and_start(tmp_path, sandbox):
    """The upstream TLS context is built by -t and by the master at start,
    so a CA file that is not PEM fails both, naming the file."""
    ca = write(tmp_path / "ca.pem", "not a certificate\n")
    os.chmod(ca, 0o644)
    cfg = popgate_lib.base_config(sandbox.tls_port, free_port())
    cfg["upstream"].update({"tls": "tls", "ca_file": ca})
    path = write(tmp_path / "badca.conf", popgate_lib.render_config(cfg))
    status, err = popgate_lib.check_config(path)
    assert status == 1, err
    assert "upstream TLS" in err and ca in err, err

    pg = popgate_lib.Popgate(str(tmp_path / "pg"), sandbox.tls_port,
                             overrides={"upstream": {"tls": "tls",
                                                     "ca_file": ca}})
    with pytest.raises(popgate_lib.PopgateError):
        pg.start()
    pg.kill()
    assert "event=startup_failed" in pg.log() and ca in pg.log(), pg.log()


def test_config_check_accepts_example(tmp_path, sandbox):
    example = os.path.join(TOP, "etc", "popgate.conf.example")
    if not os.path.exists(example):
        pytest.fail("etc/popgate.conf.example is missing")
    with open(example) as f:
        text = f.read()
    # The example names system paths; point them at the sandbox's files.
    text = re.sub(r'(certificate\s*=\s*)"[^"]*"', r'\1"%s"' % sandbox.cert, text)
    text = re.sub(r'(\bkey\s*=\s*)"[^"]*"', r'\1"%s"' % sandbox.key, text)
    text = re.sub(r'(\bpath\s*=\s*)"[^"]*"',
                  r'\1"%s"' % (tmp_path / "uids.db"), text)
    path = write(tmp_path / "example.conf", text)
    status, err = popgate_lib.check_config(path)
    assert status == 0, err


def test_listening_and_session_events(user, popgate):
    uids = user.fill(five())
    with RawPOP3(popgate.host, popgate.port) as c:
        c.login(user.name, user.password)
        c.ok("DELE 1")
        c.ok("QUIT")
        assert c.at_eof()
    assert popgate.log_lines("listening")
    m = popgate.wait_log(r"[^\n]*event=update[^\n]*")
    assert m, popgate.log()
    assert "user=%s" % user.name in m.group(0)
    assert re.search(r"expunged=%d\b" % uids[0], m.group(0)), m.group(0)
    assert popgate.wait_log(r"event=disconnect")
    for ev in ("connect", "login"):
        assert popgate.log_lines(ev), popgate.log()
    sids = set(re.findall(r"sid=(\S+)", "\n".join(popgate.log_lines("login"))))
    assert len(sids) == 1
    assert user.password not in popgate.log()


def test_upstream_down_is_sys_temp(user, make_popgate):
    """Nothing listens on the upstream port: -ERR [SYS/TEMP], no crash."""
    pg = make_popgate(upstream_port=free_port())
    with RawPOP3(pg.host, pg.port) as c:
        responses = [c.greeting]
        if c.greeting.startswith(b"+OK"):
            responses.append(c.cmd("USER " + user.name))
        if responses[-1].startswith(b"+OK"):
            responses.append(c.cmd("PASS " + user.password))
        assert responses[-1].startswith(b"-ERR [SYS/TEMP]"), responses
    assert pg.wait_log(r"event=upstream_error"), pg.log()
    # The listener survives.
    with RawPOP3(pg.host, pg.port) as c:
        assert c.greeting.startswith(b"+OK")


def test_max_connections_refuses_extra_client(user, make_popgate):
    pg = make_popgate({"daemon": {"max_connections": 2}})
    first = RawPOP3(pg.host, pg.port)
    second = RawPOP3(pg.host, pg.port)
    try:
        assert first.greeting.startswith(b"+OK")
        assert second.greeting.startswith(b"+OK")
        with RawPOP3(pg.host, pg.port) as third:
            assert third.greeting.startswith(b"-ERR [SYS/TEMP]"), third.greeting
            assert third.at_eof()
        first.ok("QUIT")
        first.close()
        # The freed slot becomes usable once popgate has reaped the session.
        deadline = time.monotonic() + 5
        while True:
            with RawPOP3(pg.host, pg.port) as again:
                if again.greeting.startswith(b"+OK"):
                    break
            assert time.monotonic() < deadline, "slot never freed"
            time.sleep(0.05)
        second.multi("CAPA")
    finally:
        first.close()
        second.close()


def connect_refused(host, port):
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(100) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except socket.timeout:
        return False


def wait_refused(pg):
    """Wait, at most 5 s, until PG refuses new clients (after SIGTERM)."""
    deadline = time.monotonic() + 5
    while not connect_refused(pg.host, pg.port):
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)


def test_sigterm_drains_running_session(user, make_popgate):
    uids = user.fill(five())
    pg = make_popgate({"daemon": {"drain_time": "20s"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.login(user.name, user.password)
        pg.signal(signal.SIGTERM)
        wait_refused(pg)
        # The running session carries on until its QUIT.
        c.multi("RETR 1")
        c.ok("DELE 1")
        assert c.cmd("QUIT").startswith(b"+OK")
        assert c.at_eof()
    finally:
        c.close()
    started = time.monotonic()
    assert pg.wait(10) == 0, pg.log()
    assert time.monotonic() - started < 10
    assert [m[0] for m in user.messages()] == uids[1:]


def expect_stop_notice(c):
    """The stop has reached C's session: -ERR [SYS/TEMP] at its wait for
    a command, then the connection closes."""
    c.sock.settimeout(10)
    line = c.read_line()
    assert line.startswith(b"-ERR [SYS/TEMP]"), line
    assert c.at_eof()


def test_sigterm_drain_time_ends_idle_session(user, make_popgate):
    uids = user.fill(five())
    pg = make_popgate({"daemon": {"drain_time": "1s"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.login(user.name, user.password)
        c.ok("DELE 1")
        pg.signal(signal.SIGTERM)
        expect_stop_notice(c)
    finally:
        c.close()
    assert pg.wait(10) == 0, pg.log()
    # Cut before QUIT: nothing deleted.
    assert [m[0] for m in user.messages()] == uids


def test_second_sigterm_ends_drain(user, make_popgate):
    """An operator who cannot wait out drain_time signals again: the
    sessions are asked to close now, as when drain_time has passed."""
    uids = user.fill(five())
    pg = make_popgate({"daemon": {"drain_time": "1h"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.login(user.name, user.password)
        c.ok("DELE 1")
        pg.signal(signal.SIGTERM)
        # Refused once the master is in its drain: the first signal has
        # been handled, so the second cannot merge with it.
        wait_refused(pg)
        assert c.cmd("NOOP").startswith(b"+OK")
        pg.signal(signal.SIGTERM)
        expect_stop_notice(c)
    finally:
        c.close()
    assert pg.wait(10) == 0, pg.log()
    assert "reason=signal" in pg.log()
    # Cut before QUIT: nothing deleted.
    assert [m[0] for m in user.messages()] == uids


def test_third_sigterm_kills_stuck_session(user, make_popgate):
    """A session inside a command cannot close between commands: its
    client has stopped reading a RETR.  A third signal kills it instead of
    waiting out command_timeout, and the master says it killed it (no
    crash)."""
    uids = user.fill([large(20 * 1024 * 1024)])
    pg = make_popgate({"daemon": {"drain_time": "1h"},
                       "upstream": {"command_timeout": "1h"},
                       "pop3": {"timeout_send": "1h"}})
    c = RawPOP3(pg.host, pg.port)
    try:
        c.login(user.name, user.password)
        # 20 MB outgrow the sockets' buffers: the session blocks in RETR.
        c.send(b"RETR 1\r\n")
        pg.signal(signal.SIGTERM)
        wait_refused(pg)
        pg.signal(signal.SIGTERM)
        assert pg.wait_log(r"event=stopping_sessions [^\n]*reason=signal"), \
            pg.log()
        pg.signal(signal.SIGTERM)
        assert pg.wait(10) == 0, pg.log()
    finally:
        c.close()
    assert re.search(r"event=killing_sessions [^\n]*reason=signal",
                     pg.log()), pg.log()
    assert "event=session_killed" in pg.log()
    assert [m[0] for m in user.messages()] == uids


def process_uids(pid):
    """Real, effective, saved and filesystem uids of PID (from /proc)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return {int(u) for u in line.split()[1:]}
    return set()


def test_runs_as_configured_user(user, popgate):
    """daemon.user: after binding, the master, every session process and
    the store holder run as that user, with no way back to root."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    nobody = pwd.getpwnam("nobody").pw_uid
    with RawPOP3(popgate.host, popgate.port) as c:
        c.login(user.name, user.password)
        sessions = popgate_lib.child_pids(popgate.proc.pid)
        assert len(sessions) == 2, sessions  # the session and the holder
        for pid in [popgate.proc.pid] + sessions:
            assert process_uids(pid) == {nobody}, pid
        c.ok("QUIT")


def waiting_for_client(pid):
    """Whether session process PID sleeps in poll() (after its session:
    waiting for the next client)."""
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return "poll" in f.read()
    except OSError:
        return False


def process_state(pid):
    """(state letter, voluntary context switches) of PID."""
    state, switches = "?", 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("State:"):
                state = line.split()[1]
            elif line.startswith("voluntary_ctxt_switches:"):
                switches = int(line.split()[1])
    return state, switches


def wait_state(pid, done, what):
    deadline = time.monotonic() + 5
    while not done(*process_state(pid)):
        assert time.monotonic() < deadline, (what, process_state(pid))
        time.sleep(0.01)


def stop_process(pid):
    os.kill(pid, signal.SIGSTOP)
    wait_state(pid, lambda st, _: st == "T", "stopped")


def connect_as_master_sees_note(pg, waiting_pid):
    """With the master stopped since before WAITING_PID wrote its idle
    note, connect so that the master finds the note and the connection in
    the same poll(): the waiting process is stopped too while the client
    connects, and resumes only once the master has woken and gone back to
    sleep.  Returns the raw POP3 client, its greeting not yet read."""
    master = pg.proc.pid
    assert process_state(master)[0] == "T"
    stop_process(waiting_pid)
    c = RawPOP3(pg.host, pg.port, read_greeting=False)
    _, switches = process_state(master)
    os.kill(master, signal.SIGCONT)
    wait_state(master, lambda st, sw: st == "S" and sw > switches,
               "master asleep again")
    os.kill(waiting_pid, signal.SIGCONT)
    c.greeting = c.read_line()
    return c


def test_sessions_per_process_serves_users_in_turn(user, make_user,
                                                   make_popgate):
    """daemon.sessions_per_process: a process, once its client is gone,
    serves the next one, each user seeing only their own mailbox; while
    it waits, max_connections does not refuse the client it is there
    for; it stops at the limit; and a stop refuses new clients at once
    and ends it once its session is over."""
    other = make_user()
    user.fill(five())
    other.fill(five()[:2])
    pg = make_popgate({"daemon": {"sessions_per_process": 3,
                                  "max_connections": 1,
                                  "drain_time": "20s"}})
    pids = []
    for n, (u, count) in enumerate([(user, 5), (other, 2), (user, 5),
                                    (other, 2)]):
        # The second client arrives as the master learns that the first
        # process waits: the master must leave it to that process.
        c = (connect_as_master_sees_note(pg, pids[0][0]) if n == 1
             else RawPOP3(pg.host, pg.port))
        with c:
            assert c.greeting.startswith(b"+OK"), (n, c.greeting)
            c.login(u.name, u.password)
            assert c.cmd("STAT").startswith(b"+OK %d " % count)
            pids.append(popgate_lib.session_pids(pg.proc.pid))
            if n == 0:
                stop_process(pg.proc.pid)
            c.ok("QUIT")
            assert c.at_eof()
        assert pg.wait_log(r"(?s)(event=disconnect.*){%d}" % (n + 1)), pg.log()
        # After its third session the first process exits, and counts
        # towards max_connections until it is reaped; otherwise it waits.
        deadline = time.monotonic() + 5
        while not (popgate_lib.session_pids(pg.proc.pid) == [] if n == 2
                   else all(waiting_for_client(p) for p in pids[-1])):
            assert time.monotonic() < deadline, \
                popgate_lib.session_pids(pg.proc.pid)
            time.sleep(0.01)
    assert all(len(p) == 1 for p in pids), pids
    assert pids[0] == pids[1] == pids[2] != pids[3], pids
    assert len(pg.log_lines("login")) == 4
    # A fifth client is in its session when SIGTERM comes: new clients
    # are refused at once, though a process that serves more than one
    # session holds the listening socket, and the session goes on.  Its
    # process then exits at once, without waiting for drain_time.
    c = RawPOP3(pg.host, pg.port)
    try:
        c.login(user.name, user.password)
        pg.signal(signal.SIGTERM)
        wait_refused(pg)
        assert c.cmd("STAT").startswith(b"+OK 5 ")
        c.ok("QUIT")
        assert c.at_eof()
    finally:
        c.close()
    started = time.monotonic()
    assert pg.wait(10) == 0, pg.log()
    assert time.monotonic() - started < 5


def make_certificate(directory, name):
    """A self-signed certificate and key at DIRECTORY/cert.pem and key.pem,
    replaced whole (rename), readable by the user popgate drops to."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=%s" % name, "-keyout", key + ".new",
         "-out", cert + ".new"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=30)
    for path in (cert, key):
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(path + ".new", nobody.pw_uid, nobody.pw_gid)
        os.chmod(path + ".new", 0o600)
        os.rename(path + ".new", path)
    return cert, key


def served_certificate(pg):
    with RawPOP3(pg.host, pg.tls_port,
                 tls_context=insecure_tls_context()) as c:
        return c.sock.getpeercert(binary_form=True)


def certificate_der(path):
    with open(path, encoding="ascii") as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_sighup_reloads_the_certificate(make_popgate):
    """SIGHUP reads the certificate and key again (a renewed certificate)
    without a restart: new connections get the new one, a session already
    in TLS carries on, and files that do not load leave the one before in
    place."""
    d = popgate_lib.store_directory()
    try:
        cert, key = make_certificate(d, "before")
        pg = make_popgate({
            "tls": {"certificate": cert, "key": key},
            "listen": [{"address": "127.0.0.1", "port": 0},
                       {"address": "127.0.0.1", "port": 0, "tls": True}]})
        assert served_certificate(pg) == certificate_der(cert)
        with RawPOP3(pg.host, pg.tls_port,
                     tls_context=insecure_tls_context()) as old:
            make_certificate(d, "after")
            pg.signal(signal.SIGHUP)
            pg.wait_log(r"event=tls_reloaded ", timeout=10)
            assert served_certificate(pg) == certificate_der(cert)
            assert b"USER" in old.multi("CAPA")[1]

            with open(key, "w", encoding="ascii") as f:
                f.write("not a key\n")
            pg.signal(signal.SIGHUP)
            pg.wait_log(r"event=tls_reload_failed ", timeout=10)
            assert served_certificate(pg) == certificate_der(cert)
            assert b"USER" in old.multi("CAPA")[1]
        assert pg.running()
    finally:
        shutil.rmtree(d, ignore_errors=True)
