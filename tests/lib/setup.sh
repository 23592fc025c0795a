# Shared set-up for tests/run-all and demo (sourced, not run).
#
# pg_install_deps   install the build and test dependencies that are missing
#                   (apt-get, as root); does nothing when all are present, so
#                   it works offline on a prepared machine
# pg_bootstrap      run autoreconf -fi in the source tree
# pg_build DIR ARGS configure (out of tree, in DIR) with ARGS and make -j2
#
# Every function returns non-zero on failure instead of exiting, so the
# caller decides what a failure means.

PG_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_PYTHON=/usr/bin/python3

PG_PACKAGES="autoconf automake libtool pkg-config gcc make libssl-dev
	libetpan-dev libconfig-dev libcmocka-dev libsqlite3-dev dovecot-imapd dovecot-pop3d
	python3 python3-pytest curl fetchmail getmail6 neomutt valgrind openssl haproxy"

pg_say() {
	printf '==> %s\n' "$*" >&2
}

pg_missing_packages() {
	local pkg status
	for pkg in $PG_PACKAGES; do
		status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)
		[ "$status" = "install ok installed" ] || printf '%s\n' "$pkg"
	done
}

pg_install_deps() {
	local missing created_policy=
	missing=$(pg_missing_packages | tr '\n' ' ')
	if [ -z "${missing// /}" ]; then
		return 0
	fi
	if [ "$(id -u)" != 0 ]; then
		pg_say "missing packages: $missing(run as root, or install them)"
		return 1
	fi
	pg_say "installing: $missing"
	# Installing dovecot-core would start the system Dovecot on the
	# standard ports; the tests run their own instance, so keep the
	# packaged service from starting (policy-rc.d, honoured by
	# invoke-rc.d and deb-systemd-invoke).
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		created_policy=1
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive apt-get update -q || rc=$?
	if [ "$rc" = 0 ]; then
		# shellcheck disable=SC2086
		DEBIAN_FRONTEND=noninteractive apt-get install -q -y \
			--no-install-recommends $missing </dev/null || rc=$?
	fi
	[ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
	if [ "$rc" != 0 ]; then
		pg_say "apt-get failed"
		return "$rc"
	fi
	# Where systemd runs, keep the packaged Dovecot off across reboots too.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now dovecot.service >/dev/null 2>&1 || true
	fi
	return 0
}

pg_bootstrap() {
	(cd "$PG_TOP" && autoreconf -fi)
}

# pg_build DIR [configure arguments...]
pg_build() {
	local dir=$1
	shift
	mkdir -p "$dir" || return 1
	(
		cd "$dir" || exit 1
		"$PG_TOP/configure" -q "$@" || exit 1
		if ! make -j2 >make.log 2>&1; then
			tail -n 40 make.log >&2
			exit 1
		fi
	)
}
