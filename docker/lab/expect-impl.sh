# shellcheck shell=bash
# The runner's expectations per implementation (sourced by runner.sh). `client-sim lab` models
# our server and relay; where another implementation is known to behave otherwise, the row's
# expectation is changed here and the change is named in the table (`why differs` column,
# explained under it). Env: SERVER_IMPL, RELAY_IMPL (ours | miredo | plugged), RELAY_TRUST.

# describe_impl server|relay: one line naming what runs.
describe_impl() {
  case "$1:${SERVER_IMPL:-ours}:${RELAY_IMPL:-ours}" in
    server:ours:*) echo "ours (teredo-server)" ;;
    server:miredo:*) echo "miredo (Debian miredo-server $(miredo_version))" ;;
    server:plugged:*) echo "plugged (service server-plugged; expectations as for ours)" ;;
    relay:*:ours) echo "ours (teredo-relay --trust ${RELAY_TRUST:-strict})" ;;
    relay:*:miredo) echo "miredo (Debian miredo $(miredo_version), RelayType cone; expected as --trust lenient)" ;;
    relay:*:plugged) echo "plugged (service relay-plugged; expectations as for ours --trust ${RELAY_TRUST:-strict})" ;;
    *) echo "unknown ($1)" ;;
  esac
}

miredo_version() {
  miredo -V 2>/dev/null | awk 'NR == 1 { print $NF == "(N/A)" ? $(NF - 1) : $NF }'
}

# The relay's trust policy the ping6 column is expected under: Miredo's relay takes a direct
# bubble answering its indirect one as the peer's mapping even when it differs from the
# mapping in the peer's Teredo address (relay.c, CheckBubble), which is what our --trust
# lenient does; a plugged-in relay is expected to behave as RELAY_TRUST says.
relay_trust() {
  case "${RELAY_IMPL:-ours}" in
    miredo) echo lenient ;;
    *) echo "${RELAY_TRUST:-strict}" ;;
  esac
}

# adjust_expectation JSON (a row's expectation from client-sim lab, with ping_strict and
# ping_lenient) -> JSON with .ping set and .notes[] naming every change ({tag, why}).
# Debian's miredo-server needs no change: every row of the matrix behaves with it as with ours
# (the clients qualify, detect their NAT, and its native forwarding carries the ping6).
adjust_expectation() {
  local e=$1 trust
  trust=$(relay_trust)
  e=$(jq -c --arg trust "$trust" --arg impl "${RELAY_IMPL:-ours}" '
    .ping = (if $trust == "lenient" then .ping_lenient else .ping_strict end)
    | if $impl == "miredo" and .ping_lenient != .ping_strict then
        .notes += [{tag: "miredo-relay-lenient",
          why: "Miredo'"'"'s relay (RelayType cone) accepts the direct bubble that answers its indirect bubble from a mapping other than the one in the client'"'"'s Teredo address (a client behind a symmetric NAT) and sends to that mapping, as our --trust lenient does (strict RFC 4380 5.4.2 drops it): ping6 expected \(.ping_lenient) (ours, strict: \(.ping_strict))"}]
      else . end' <<<"$e")
  printf '%s\n' "$e"
}
