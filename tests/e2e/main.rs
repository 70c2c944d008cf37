//! End-to-end tests of teredo-lab (one test binary, one module per area).
//!
//! Most tests need root (network namespaces) and some need Debian's `miredo`, `miredo-server`,
//! `tshark`, `nft` and `conntrack`. Without them a test prints `SKIPPED: … needs …` and passes —
//! except under `CI=true`, where it fails: CI must never skip (see `.ci/run`, which installs
//! them). Each test builds its own topology (its own "Internet" bridge namespace), so the tests
//! run in parallel.
//!
//! * `bad_input`: the bad-input corpus (`teredo_tests::bad_input`) against the running server
//!   and relay over real sockets: one verdict per kind (drop reason, nothing sent, still
//!   answering).
//! * `netns`: the harness itself (namespaces, bridge, NAT router, cleanup).
//! * `tshark`: the tshark dissection checker, on hand-made captures.
//! * `client_interop`: `client-sim qualify` (every client profile) behind real Linux NATs
//!   (nftables) and without NAT, against our server and `miredo-server`: NAT type, mapping,
//!   address and exit status.
//! * `nat_fidelity`: the NAT model against kernel NATs, cell by cell: every profile behind
//!   every preset in process (`client-sim lab`) and behind the matching nftables router
//!   (`client-sim qualify`), the comparison table printed, any disagreement a failure.
//! * `fig1_netns`: RFC 6081 Figure 1 cells with two real-socket clients, each behind its own
//!   nftables NAT router (`client-sim respond` answers, `client-sim ping` pings its Teredo
//!   address), against the same rows in process (`client_sim::connectivity`), the table
//!   printed, any difference a failure.
//! * `conformance`: TEREDO.md (b) server checks 1–15 against the in-process server over real
//!   sockets in a namespace, and tshark's view of that traffic.
//! * `floods`: spoofed-source RS floods against the server: one RA per RS, no more bytes
//!   than the RA/RS ratio, and the per-source rate limit.
//! * `interop`: Debian's Miredo client against a Teredo server in namespaces — ours
//!   (`teredo-server`) and, as the reference, Debian's `miredo-server`.
//! * `relay_flood`: the relay binary flooded with distinct Teredo destinations (ten times its
//!   `--max-peers`): table within its cap, evictions, resident memory bounded and measured.
//! * `relay_interop`: Debian's Miredo client through our server and our relay (TUN) to a
//!   native IPv6 host, behind every Linux NAT kind (`nat_recipes`), strict and lenient.
//! * `relay_xdp`: our relay with its XDP fast path (`--fast-path xdp`): `client-sim ping`
//!   through our server and the relay to a native host, every echo answered, the program
//!   forwarding both ways after the first exchange (the relay's metrics, promtool-clean);
//!   a 75 s session forwarded only in XDP keeps its peer in the core past the idle timeout.
//!   Miredo through it is in `relay_interop`.
//! * `miredo_relay`: our client (`client-sim ping`) through Debian's Miredo relay
//!   (`RelayType cone`) and `miredo-server` to a native IPv6 host, without NAT and behind a
//!   port-restricted and a symmetric NAT, checked in the report and on the wire.
//! * `promtool`: `promtool check metrics` on the `/metrics` of the server, the relay and
//!   `client-sim load`, and the series a load test reads.
//! * `prom_assets`: the recording rules, console page and Grafana dashboard of `docker/`:
//!   `promtool check rules`, every expression parses and names only metrics we export.
//! * `prom_console`: the console page served by Debian's Prometheus with our console
//!   libraries and rules, scraping a `teredo-server` on loopback, rendered by headless
//!   Chromium: no console errors, every graph rendered, the ones with data drew.
//! * `faults`: server killed and restarted or dead, relay restarted, NAT mappings flushed
//!   and the NAT "rebooted" with new ports, 10 % loss — around a long `client-sim ping`
//!   session behind a kernel NAT, through our server and relay.
//! * `load`: `client-sim load`, the load generator: its `--ceiling` on loopback, a
//!   qualification storm against `teredo-server`, and 1000 clients through our server and
//!   relay to a native host with no loss, the report checked against its /metrics.
//! * `conform`: `client-sim conform` against ours (strict and lenient relay), Debian's
//!   `miredo-server` and Miredo relay, and a misbehaving server per fault, asserted against
//!   `conformance/expectations.json`; its JUnit parsed as XML, its pcap read by tshark.
//! * `misbehaving`: the misbehaving test server on the wire: each fault breaks its one rule.
//! * `html_report`: `client-sim lab --html` rendered by headless Chromium (the rendered DOM,
//!   the console, a screenshot) and its `--junit` parsed as XML.
//! * `run_report`: `client-sim qualify --html --junit` and `ping --html --junit` against the
//!   in-process server, the pages rendered by headless Chromium (arrows = the server's
//!   datagram counters).
//! * `compose`: the container lab (`docker/`): compose file, matrix and scripts checked here;
//!   the full run is `.ci/run`'s "Container lab" step.
//! * `swarm`: the Docker Swarm stack (`docker/swarm/`): stack file, Prometheus discovery and
//!   scripts checked here; the run is `.ci/run`'s "Docker Swarm" step.

mod bad_input;
mod client_interop;
mod compose;
mod conform;
mod conformance;
mod faults;
mod fig1_netns;
mod floods;
mod html_report;
mod interop;
mod load;
mod miredo_relay;
mod misbehaving;
mod nat_fidelity;
mod netns;
mod prom_assets;
mod prom_console;
mod promtool;
mod relay_flood;
mod relay_interop;
mod relay_xdp;
mod run_report;
mod swarm;
mod tshark;
