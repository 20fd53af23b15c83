#!/bin/sh
# Chromium for tests/test_browser.py (Debian's package, /usr/bin/chromium), installed with apt-get
# where it is missing and apt-get can be used: as root, or through sudo without a password.
# Elsewhere nothing is installed and the browser test is skipped, saying why; BNCOURSE_CHROMIUM
# names another Chromium or Chrome executable.
if [ -n "$BNCOURSE_CHROMIUM" ] || [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "Chromium is not installed and there is no apt-get: the browser test will be skipped" \
        "(install Chromium, or set BNCOURSE_CHROMIUM to a Chromium or Chrome executable)." >&2
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "Chromium is not installed and apt-get needs root: the browser test will be skipped" \
        "(sudo apt-get install chromium, then make test)." >&2
    exit 0
fi
echo "Installing Chromium for the browser test: apt-get install chromium"
# Installing from the package lists already present is tried first; refreshing them needs the network.
$SUDO apt-get install -y chromium \
    || { $SUDO apt-get update && $SUDO apt-get install -y chromium; } \
    || echo "apt-get could not install Chromium: the browser test will be skipped." >&2
exit 0
