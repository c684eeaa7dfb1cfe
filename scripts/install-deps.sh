#!/usr/bin/env bash
# Installs what the integration tests and scripts/dev-cluster.sh need: redis-server and
# redis-cli (>= 7.0), and redis-py and ioredis for the client-compatibility test. Idempotent: does
# nothing when they are already installed.
# Debian/Ubuntu only (apt-get); elsewhere it says what to install.
set -euo pipefail

MIN_MAJOR=7

have() { command -v "$1" >/dev/null 2>&1; }

if ! have redis-server || ! have redis-cli; then
    if ! have apt-get; then
        echo "install-deps: redis-server and redis-cli (>= ${MIN_MAJOR}.0) are missing and apt-get is not available; install them with your package manager" >&2
        exit 1
    fi
    as_root() {
        if [ "$(id -u)" -eq 0 ]; then
            "$@"
        elif have sudo; then
            sudo "$@"
        else
            echo "install-deps: need root (or sudo) to install redis-server and redis-tools" >&2
            exit 1
        fi
    }
    echo "+ apt-get update && apt-get install redis-server redis-tools"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server redis-tools

    # Debian's package starts a system redis on 6379; the tests and the dev cluster run their
    # own nodes, so stop and disable it. Only where systemd is actually running; without
    # systemd (containers) the package starts nothing that matters here.
    if have systemctl && [ -d /run/systemd/system ]; then
        echo "+ systemctl disable --now redis-server.service"
        as_root systemctl disable --now redis-server.service >/dev/null 2>&1 || true
    fi
fi

# Version check: "Redis server v=7.0.15 sha=..." / "redis-cli 7.0.15".
server_version=$(redis-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')
cli_version=$(redis-cli --version | sed -n 's/^redis-cli \([0-9][0-9.]*\).*/\1/p')
for pair in "redis-server:${server_version}" "redis-cli:${cli_version}"; do
    name=${pair%%:*}
    version=${pair#*:}
    major=${version%%.*}
    if [ -z "$version" ] || [ "$major" -lt "$MIN_MAJOR" ]; then
        echo "install-deps: $name version '${version:-unknown}' is too old: need >= ${MIN_MAJOR}.0" >&2
        exit 1
    fi
done
echo "install-deps: redis-server ${server_version}, redis-cli ${cli_version}"

# redis-py, for the client-compatibility test (tests/client_compat.rs), from PyPI.
if ! python3 -c 'import redis' >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1 && have apt-get && [ "$(id -u)" -eq 0 ]; then
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pip
    fi
    echo "install-deps: installing redis-py from PyPI" >&2
    python3 -m pip install --quiet --disable-pip-version-check 'redis>=5,<6' \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'redis>=5,<6'
fi
echo "install-deps: redis-py $(python3 -c 'import redis; print(redis.__version__)')"

# ioredis (Node.js), the third client library of the compatibility test, from npm, into
# tests/compat/node_modules at the versions of tests/compat/package-lock.json.
if ! have node || ! have npm; then
    if have apt-get && [ "$(id -u)" -eq 0 ]; then
        echo "+ apt-get install nodejs npm"
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm \
            || { env DEBIAN_FRONTEND=noninteractive apt-get update -q \
                && env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm; }
    else
        echo "install-deps: node and npm are missing (needed by the ioredis compatibility test); install them with your package manager" >&2
        exit 1
    fi
fi
COMPAT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/compat" && pwd)"
if [ ! -f "$COMPAT_DIR/node_modules/ioredis/package.json" ]; then
    echo "install-deps: installing ioredis from npm" >&2
    npm ci --prefix "$COMPAT_DIR" --no-audit --no-fund --loglevel=error
fi
echo "install-deps: node $(node --version), ioredis $(node -p "require('$COMPAT_DIR/node_modules/ioredis/package.json').version")"

# Valkey 8 (valkey-server, valkey-cli), the second backend the integration tests run against
# (scripts/test.sh: SLOTPROXY_TEST_BACKEND=valkey). Debian 12 has it in bookworm-backports only:
# that suite is added, and only these two packages are taken from it (everything else keeps
# coming from bookworm).
if ! have valkey-server || ! have valkey-cli; then
    if ! have apt-get || [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: valkey-server and valkey-cli (>= 8.0) are missing; install them (Debian 12: valkey-server and valkey-tools from bookworm-backports, as root)" >&2
        exit 1
    fi
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = "bookworm" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "+ add the bookworm-backports suite (for valkey-server and valkey-tools only)"
        cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    fi
    suffix=""
    [ "$codename" = "bookworm" ] && suffix="/bookworm-backports"
    echo "+ apt-get install valkey-server$suffix valkey-tools$suffix"
    env DEBIAN_FRONTEND=noninteractive apt-get update -q
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "valkey-server$suffix" "valkey-tools$suffix"
    # As for redis-server: the tests run their own nodes, never the packaged service.
    if have systemctl && [ -d /run/systemd/system ]; then
        systemctl disable --now valkey-server.service >/dev/null 2>&1 || true
    fi
fi
valkey_version=$(valkey-server --version | sed -n 's/.* v=\([0-9][0-9.]*\).*/\1/p')
if [ "${valkey_version%%.*}" -lt 8 ] 2>/dev/null || [ -z "$valkey_version" ]; then
    echo "install-deps: valkey-server version '${valkey_version:-unknown}' is too old: need >= 8.0" >&2
    exit 1
fi
echo "install-deps: valkey-server ${valkey_version}"
