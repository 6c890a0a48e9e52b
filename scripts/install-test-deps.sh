#!/usr/bin/env bash
# Install the system packages dmarclens' tests start for real: Dovecot (IMAP),
# Debian Chromium (driven by Playwright; `playwright install` is never used
# because its browser download is not reachable from CI) and openssl (test
# certificates).
#
# Idempotent: installs only what is missing and runs `apt-get update` only
# when something must be installed. As root it installs; as a normal user it
# uses sudo when available, otherwise it only checks and says what is missing.
# Exit status: 0 when everything is present afterwards, 1 otherwise.
#
# Example:
#   sudo scripts/install-test-deps.sh
set -euo pipefail

say() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: ERROR: %s\n' "$*" >&2; exit 1; }

CHROMIUM_BIN=/usr/lib/chromium/chromium

have_dovecot()  { command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; }
have_chromium() { [ -x "$CHROMIUM_BIN" ]; }
have_openssl()  { command -v openssl >/dev/null 2>&1; }

# package name → check function
missing=()
have_dovecot  || missing+=(dovecot-imapd)
have_chromium || missing+=(chromium)
have_openssl  || missing+=(openssl)

if [ "${#missing[@]}" -eq 0 ]; then
    say "nothing to install: dovecot, chromium and openssl are present"
else
    say "missing: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
        say "not root: using sudo"
    else
        die "not root and no usable sudo; as root run: apt-get update && apt-get install -y ${missing[*]}"
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian 12; install ${missing[*]} by hand"

    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
    say "running apt-get update"
    "${SUDO[@]}" apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null \
        || die "apt-get update failed (is a Debian mirror reachable?)"
    say "running apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get install "${apt_opts[@]}" "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
    say "installed: ${missing[*]}"
fi

# Verify, whatever happened above, and show what the tests will run.
status=0
if have_dovecot; then
    dovecot_bin=$(command -v dovecot 2>/dev/null || echo /usr/sbin/dovecot)
    say "dovecot:  $("$dovecot_bin" --version 2>/dev/null || echo '?') ($dovecot_bin)"
else
    printf 'install-test-deps: ERROR: dovecot still missing (package dovecot-imapd)\n' >&2; status=1
fi
if have_chromium; then
    say "chromium: $("$CHROMIUM_BIN" --version 2>/dev/null | head -n1 || echo '?') ($CHROMIUM_BIN)"
else
    printf 'install-test-deps: ERROR: %s still missing (package chromium)\n' "$CHROMIUM_BIN" >&2; status=1
fi
if have_openssl; then
    say "openssl:  $(openssl version 2>/dev/null || echo '?')"
else
    printf 'install-test-deps: ERROR: openssl still missing (package openssl)\n' >&2; status=1
fi
exit "$status"
