# Prometheus for the compose lab's `monitoring` and `load` profiles: Debian's own
# `prometheus` package on the registry-free base (docker/base-image.sh), nothing pulled.
# Built by docker/build.sh with the classic builder and --pull=false; the apt layer depends
# only on the base, so Docker's cache keeps it across builds of our binaries. The base's
# policy-rc.d stops the package's postinst from starting a daemon during the build.
# Its configuration, recording rules, console page and query scripts come from docker/lab/,
# mounted at /lab by compose, and so do the console libraries the page uses
# (docker/lab/console_libraries/: Debian's example prom.lib, whose <head> loads a script
# Debian does not ship and a directory as a script, fixed; and menu.lib).
ARG BASE=teredo-lab/base:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && prometheus --version 2>&1 | head -n 1
LABEL org.opencontainers.image.title="teredo-lab-prometheus" \
      org.opencontainers.image.description="Debian's Prometheus for the teredo-lab compose profiles"
EXPOSE 9090
CMD ["prometheus", "--config.file=/lab/prometheus.yml", "--storage.tsdb.path=/prometheus", \
     "--web.console.templates=/lab/consoles", \
     "--web.console.libraries=/lab/console_libraries"]
