#!/usr/bin/env bash
# Print the Debian mirror apt uses on this host: the first URI of /etc/apt/sources.list and
# /etc/apt/sources.list.d/*.{list,sources} that serves SUITE with component main.
#
#   docker/debian-mirror.sh [SUITE]     (default bookworm; DEBIAN_MIRROR overrides)
#
# Used by base-image.sh (debootstrap) and install-compose-v2.sh (Debian 13's docker-compose
# lives on the same mirror as Debian 12).
set -euo pipefail
SUITE=${1:-bookworm}
if [ -n "${DEBIAN_MIRROR:-}" ]; then
  echo "$DEBIAN_MIRROR"
  exit 0
fi

find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # one-line style: deb [options] URI SUITE COMPONENTS...
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        uri = $i; s = $(i + 1)
        if (s != suite) next
        for (j = i + 2; j <= NF; j++) if ($j == "main") { print uri; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822 style: paragraphs with Types, URIs, Suites, Components
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") &&
            (" " comps " ") ~ / main /) { split(uris, u, " "); print u[1]; found = 1 }
        types = uris = suites = comps = ""
      }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); if (found) exit; next }
      /^Types:/      { sub(/^Types:[ \t]*/, "");      types = $0 }
      /^URIs:/       { sub(/^URIs:[ \t]*/, "");       uris = $0 }
      /^Suites:/     { sub(/^Suites:[ \t]*/, "");     suites = $0 }
      /^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
      END { if (!found) flush() }' "$f"
  done
}
mirror=$(find_mirror | head -n 1)
if [ -z "$mirror" ]; then
  echo "debian-mirror.sh: no '$SUITE main' source in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
  exit 1
fi
echo "$mirror"
