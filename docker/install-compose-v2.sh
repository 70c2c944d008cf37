#!/usr/bin/env bash
# Install Docker Compose v2 (`docker compose`) as a Docker CLI plugin on Debian 12, which
# packages only docker-compose 1.29. Debian 13's `docker-compose` package (2.26, a static
# binary) is on the same mirror under the suite `trixie`: this fetches that one .deb with a
# temporary apt configuration (its own sources, lists and cache in a scratch folder; trixie is
# never added to the system's sources and nothing is installed with dpkg), and copies its
# cli-plugins/docker-compose into the CLI plugin folder. Run as root.
#
#   docker/install-compose-v2.sh [--force]   (--force: even when `docker compose` works)
#
# Environment: COMPOSE_V2_SUITE (trixie), DOCKER_CLI_PLUGINS (/usr/local/lib/docker/cli-plugins,
# one of the folders the Docker CLI searches), DEBIAN_MIRROR (default: the host's bookworm
# mirror, docker/debian-mirror.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE=${COMPOSE_V2_SUITE:-trixie}
DEST=${DOCKER_CLI_PLUGINS:-/usr/local/lib/docker/cli-plugins}

case "${1:-}" in
  --force) ;;
  "")
    if docker compose version >/dev/null 2>&1; then
      echo "docker compose is already installed: $(docker compose version)"
      exit 0
    fi
    ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

mirror=$("$here/debian-mirror.sh" bookworm)
tmp=$(mktemp -d /var/tmp/teredo-compose-v2.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# apt downloads as the user _apt: it must be able to write there.
chmod 755 "$tmp"
mkdir -p "$tmp/sources.list.d" "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb"
chown _apt "$tmp/lists/partial" "$tmp/deb" 2>/dev/null || true
echo "deb $mirror $SUITE main" >"$tmp/sources.list.d/$SUITE.list"
# Release files are checked against the keys in /etc/apt/trusted.gpg.d (Debian 12's
# debian-archive-keyring carries the trixie keys).
apt_tmp=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$tmp/sources.list.d"
  -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
  -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  # only the Packages index: no translations, no AppStream metadata
  -o "Acquire::Languages=none" -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false")
echo "fetching docker-compose from $mirror $SUITE (temporary apt sources in $tmp)"
apt-get "${apt_tmp[@]}" -q update
(cd "$tmp/deb" && apt-get "${apt_tmp[@]}" -q download docker-compose)
deb=$(ls "$tmp"/deb/docker-compose_*.deb)
dpkg-deb -f "$deb" Package Version Depends
dpkg-deb -x "$deb" "$tmp/root"
plugin=$(find "$tmp/root" -path '*/cli-plugins/docker-compose' -type f | head -n 1)
[ -n "$plugin" ] || { echo "install-compose-v2.sh: no cli-plugins/docker-compose in $deb" >&2; exit 1; }
install -D -m 755 "$plugin" "$DEST/docker-compose"
echo "installed $DEST/docker-compose from $(basename "$deb")"
docker compose version
