# Shared by scripts/up and scripts/test: a project virtualenv in .venv, installed once
# per change of pyproject.toml (and of the extras asked for).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "Python 3.11 or newer is required (found $("$PYTHON" --version))" >&2; exit 1; }

ensure_venv() {  # $1: pip target, e.g. "." or ".[test]"
  local target="$1" stamp=".venv/.installed"
  local want
  want="$(cat pyproject.toml | sha256sum | cut -c1-16) $target"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
  fi
  if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
    echo "$want" >> "$stamp"
  fi
}

ensure_system_packages() {  # what the tests drive besides Python: Chromium, promtool, Redis, PostgreSQL
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v redis-cli >/dev/null || missing+=(redis-server)  # the Redis Cluster tests
  # initdb and pg_ctl: the PostgreSQL restart test runs a private server of its own.
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
  if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (Debian packages) for the browser, alert-rule, cluster and restart tests" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1 \
      || echo "warning: could not install ${missing[*]}; those tests will skip" >&2
  fi
}
