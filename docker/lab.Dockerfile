# teredo-lab's one image: the registry-free base (docker/base-image.sh) plus our three
# binaries and the entrypoint scripts. Every service of compose.yml runs it with its own
# command. Classic-builder syntax only (no BuildKit features); built by docker/build.sh
# with --pull=false from a context holding bin/ (cargo's release binaries) and lab/.
ARG BASE=teredo-lab/base:bookworm
FROM ${BASE}
COPY bin/ /usr/local/bin/
COPY lab/ /lab/
RUN teredo-server --version && teredo-relay --version && client-sim --version
LABEL org.opencontainers.image.title="teredo-lab" \
      org.opencontainers.image.description="Teredo server, relay and client-sim for the container lab"
CMD ["client-sim", "--help"]
