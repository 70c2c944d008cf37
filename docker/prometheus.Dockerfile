# Prometheus for the compose lab's `monitoring` and `load` profiles: Debian's own
# `prometheus` package on the registry-free base (docker/base-image.sh), nothing pulled.
# Built by docker/build.sh with the classic builder and --pull=false; the apt layer depends
# only on the base, so Docker's cache keeps it across builds of our binaries. The base's
# policy-rc.d stops the package's postinst from starting a daemon during the build.
# Its configuration, recording rules, console page and query scripts come from docker/lab/,
# mounted at /lab by compose. The console page uses Debian's example console libraries
# (prom.lib, menu.lib), put where the package means them to go (its own
# /etc/prometheus/console_libraries holds only a README).
ARG BASE=teredo-lab/base:bookworm
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && prometheus --version 2>&1 | head -n 1
RUN cp /usr/share/doc/prometheus/examples/console_libraries/*.lib /etc/prometheus/console_libraries/
LABEL org.opencontainers.image.title="teredo-lab-prometheus" \
      org.opencontainers.image.description="Debian's Prometheus for the teredo-lab compose profiles"
EXPOSE 9090
CMD ["prometheus", "--config.file=/lab/prometheus.yml", "--storage.tsdb.path=/prometheus", \
     "--web.console.templates=/lab/consoles", \
     "--web.console.libraries=/etc/prometheus/console_libraries"]
