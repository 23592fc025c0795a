"""The C tests that need a live IMAP server (test_imap_backend,
test_imap_uidmap) run against the session's Dovecot sandbox here.

`make check` runs them too, but without POPGATE_TEST_IMAP they only print
a skipped TAP plan; this is where they really run.  The binaries are
taken from the build directory of the popgate under test; a missing binary
fails (run `make check`, or build the two programs, first).
"""

import os
import subprocess

import pytest

import popgate as popgate_lib

pytestmark = pytest.mark.popgate_only

PROGRAMS = ["test_imap_backend", "test_imap_uidmap"]


@pytest.mark.parametrize("program", PROGRAMS)
def test_c_program_against_dovecot(program, sandbox, user, tmp_path):
    build = os.path.dirname(os.path.abspath(popgate_lib.find_binary()))
    path = os.path.join(build, "tests", "unit", program)
    assert os.access(path, os.X_OK), "%s not built" % path
    env = dict(os.environ)
    env["POPGATE_TEST_IMAP"] = "%s:%d:%s:%s" % (sandbox.host, sandbox.port,
                                                user.name, user.password)
    env["POPGATE_TEST_IMAP_TLS"] = "%d:%s" % (sandbox.tls_port, sandbox.cert)
    env["TMPDIR"] = str(tmp_path)
    res = subprocess.run([path], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, timeout=600)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, out
    assert "SKIP" not in out, out
    assert "[  PASSED  ]" in out, out
    assert "[  FAILED  ]" not in out, out
