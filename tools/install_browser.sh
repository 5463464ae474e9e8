#!/usr/bin/env bash
# Installs the headless browser that tests/html drives: Debian's `chromium` and
# `chromium-driver` (Debian keeps the driver matched to its Chromium).
#
#     bash tools/install_browser.sh      # called by `make setup`; safe to rerun
#
# Idempotent: does nothing when `chromium` and `chromedriver` are already on PATH.
# Otherwise installs both with apt-get (non-interactive), running `apt-get update`
# first only when the package lists do not offer them. Exits non-zero with a
# message saying why when it cannot; the browser tests then fail, never skip.
set -euo pipefail

PKGS=(chromium chromium-driver)
say() { echo "install_browser: $*"; }
die() { echo "install_browser: ERROR: $*" >&2; exit 1; }

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

check_versions() {
    local browser driver
    browser=$(chromium --version 2>/dev/null | grep -Eo '[0-9]+(\.[0-9]+)+' | head -n1) \
        || die "'chromium --version' failed; the Chromium install looks broken"
    driver=$(chromedriver --version 2>/dev/null | grep -Eo '[0-9]+(\.[0-9]+)+' | head -n1) \
        || die "'chromedriver --version' failed; the chromium-driver install looks broken"
    [ -n "$browser" ] && [ -n "$driver" ] || die "could not read the Chromium/ChromeDriver versions"
    if [ "${browser%%.*}" != "${driver%%.*}" ]; then
        die "Chromium $browser and ChromeDriver $driver differ in major version; install both from the same source (apt-get install --reinstall ${PKGS[*]})"
    fi
    say "Chromium $browser, ChromeDriver $driver: ready"
}

if have_browser; then
    check_versions
    exit 0
fi

say "chromium/chromedriver not found on PATH; installing ${PKGS[*]} with apt-get"
command -v apt-get >/dev/null 2>&1 \
    || die "apt-get is not available: install Chromium and a matching ChromeDriver by hand (commands 'chromium' and 'chromedriver' on PATH)"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        die "installing ${PKGS[*]} needs root: run 'sudo apt-get install -y ${PKGS[*]}' (or this script as root)"
    fi
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)

offered() {  # true when the package lists have an installation candidate for every package
    local p cand
    for p in "${PKGS[@]}"; do
        cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
        [ -n "$cand" ] && [ "$cand" != "(none)" ] || return 1
    done
}

updated=0
update() {
    "${APT[@]}" update || die "apt-get update failed (no network or no package mirror reachable?)"
    updated=1
}

if ! offered; then
    say "package lists lack ${PKGS[*]}: running apt-get update"
    update
    offered || die "no installation candidate for ${PKGS[*]} even after apt-get update (not a Debian-based system, or the repository lacks them)"
fi

if ! "${APT[@]}" install "${PKGS[@]}"; then
    # Stale package lists name versions the mirror no longer has: refresh once, retry.
    [ "$updated" -eq 0 ] || die "apt-get install ${PKGS[*]} failed"
    say "apt-get install failed with the current package lists: running apt-get update and retrying"
    update
    "${APT[@]}" install "${PKGS[@]}" || die "apt-get install ${PKGS[*]} failed"
fi

hash -r
have_browser || die "${PKGS[*]} installed but 'chromium'/'chromedriver' are still not on PATH"
check_versions
