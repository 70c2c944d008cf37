#!/usr/bin/env bash
# Build everything the container lab runs, with no registry:
#   1. the base image teredo-lab/base:bookworm from Debian's packages (docker/base-image.sh;
#      skipped when it exists),
#   2. our binaries: cargo build --release --bins of the server, relay and client-sim
#      packages (glibc-linked; the base is bookworm, the same glibc as a Debian 12 host:
#      checked below),
#   3. the image teredo-lab/lab:latest (docker/lab.Dockerfile, classic builder, --pull=false),
#   4. the image teredo-lab/prometheus:latest (docker/prometheus.Dockerfile: Debian's
#      prometheus package on the same base, for the compose profiles `monitoring` and `load`;
#      Docker's layer cache makes it free after the first build).
# Idempotent: a second run rebuilds only what changed. Prints each step's time and the sizes.
# --no-cargo packs the release binaries already built instead of running cargo.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
BASE_IMAGE=${BASE_IMAGE:-teredo-lab/base:bookworm}
IMAGE=${TEREDO_LAB_IMAGE:-teredo-lab/lab:latest}
PROM_IMAGE=${TEREDO_LAB_PROMETHEUS_IMAGE:-teredo-lab/prometheus:latest}
BINS=(teredo-server teredo-relay client-sim)
export BASE_IMAGE
no_cargo=false
case "${1:-}" in
  --no-cargo) no_cargo=true ;;
  "") ;;
  *) echo "usage: $0 [--no-cargo]" >&2; exit 2 ;;
esac

step() { printf '\n== %s\n' "$*"; }
t0=$(date +%s)

step "base image $BASE_IMAGE"
t=$(date +%s)
"$here/base-image.sh"
t_base=$(($(date +%s) - t))

target=${CARGO_TARGET_DIR:-$root/target}
t=$(date +%s)
if [ "$no_cargo" = true ]; then
  step "cargo build skipped (--no-cargo): the release binaries in $target/release"
else
  # Only the three packages the images carry (not every workspace member's binaries).
  step "cargo build --release -p teredo-server -p teredo-relay -p client-sim --bins"
  (cd "$root" && cargo build --release -p teredo-server -p teredo-relay -p client-sim --bins)
fi
t_cargo=$(($(date +%s) - t))
for b in "${BINS[@]}"; do
  [ -x "$target/release/$b" ] || { echo "build.sh: no $target/release/$b" >&2; exit 1; }
done

# The binaries link glibc dynamically: the newest GLIBC_x.y symbol version they need must
# exist in the base image's libc.
need=$(for b in "${BINS[@]}"; do objdump -T "$target/release/$b"; done |
  grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
have=$(docker run --rm --network none "$BASE_IMAGE" sh -c 'ldd --version | head -n 1' | awk '{ print $NF }')
printf 'binaries need up to %s; %s has glibc %s\n' "$need" "$BASE_IMAGE" "$have"
if [ "$(printf '%s\n%s\n' "${need#GLIBC_}" "$have" | sort -V | tail -n 1)" != "$have" ]; then
  echo "build.sh: the binaries need $need but the base image has glibc $have" >&2
  exit 1
fi

step "image $IMAGE"
t=$(date +%s)
ctx=$target/docker-context
rm -rf "$ctx"
mkdir -p "$ctx/bin"
for b in "${BINS[@]}"; do
  # Debug info stays on the host (profile.release has debug = 1); symbols stay in.
  objcopy --strip-debug "$target/release/$b" "$ctx/bin/$b"
done
cp -r "$here/lab" "$ctx/lab"
# Classic builder: BuildKit is not needed and would look the base image up in a registry.
DOCKER_BUILDKIT=0 docker build --pull=false --build-arg "BASE=$BASE_IMAGE" \
  -f "$here/lab.Dockerfile" -t "$IMAGE" "$ctx"
t_image=$(($(date +%s) - t))
# Earlier builds of the lab image, now untagged.
docker image prune -f --filter "label=org.opencontainers.image.title=teredo-lab" >/dev/null

step "image $PROM_IMAGE"
t=$(date +%s)
# Nothing from the build context is used: an empty one.
pctx=$target/docker-context-prometheus
rm -rf "$pctx"
mkdir -p "$pctx"
DOCKER_BUILDKIT=0 docker build --pull=false --build-arg "BASE=$BASE_IMAGE" \
  -f "$here/prometheus.Dockerfile" -t "$PROM_IMAGE" "$pctx"
t_prom=$(($(date +%s) - t))
docker image prune -f --filter "label=org.opencontainers.image.title=teredo-lab-prometheus" >/dev/null

step "summary"
size() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
printf 'base image   %-28s %8s  (step %s s)\n' "$BASE_IMAGE" "$(size "$BASE_IMAGE")" "$t_base"
printf 'cargo build  %-28s %8s  (step %s s)\n' "release, 3 binaries" \
  "$(du -cb "$ctx"/bin/* | awk 'END { printf "%.0f MB", $1 / 1e6 }')" "$t_cargo"
printf 'lab image    %-28s %8s  (step %s s)\n' "$IMAGE" "$(size "$IMAGE")" "$t_image"
printf 'prometheus   %-28s %8s  (step %s s)\n' "$PROM_IMAGE" "$(size "$PROM_IMAGE")" "$t_prom"
printf 'total %s s\n' "$(($(date +%s) - t0))"
