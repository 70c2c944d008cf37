#!/bin/bash
# A NAT router: WAN on the `internet` network, LAN on its own 10.0.N.0/24 network. Loads the
# nftables recipe of its kind (shared/NAT.md section 9) with the interfaces found by subnet:
# the same rulesets as the network-namespace tests (tests/src/nat_recipes.rs).
#
#   nat.sh full-cone|restricted|port-restricted|symmetric
#
# To add a kind: add a case below that prints its ruleset (variables: $wan, $lan, $lan_net,
# $wan_ip), then a router + client pair in compose.yml and rows in matrix.tsv.
set -euo pipefail
kind=${1:?usage: nat.sh KIND}
LAB_ROLE="nat-$kind"
# shellcheck source=common.sh
. /lab/common.sh

wan=$(iface_of "$INTERNET_PREFIX")
lan=$(iface_of 10.)
{ [ -n "$wan" ] && [ -n "$lan" ]; } || die "WAN ($wan) or LAN ($lan) interface not found"
wan_ip=$(addr_of "$wan"); wan_ip=${wan_ip%/*}
lan_net=$(ip -o -4 route show dev "$lan" scope link | awk '{ print $1; exit }')
drop_default_routes
[ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ] || die "net.ipv4.ip_forward is not 1 (compose sysctls)"

masquerade_table() { # $1: extra masquerade flags
  cat <<NFT
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname "$wan" ip saddr $lan_net masquerade $1
  }
}
NFT
}

# R4: endpoint-independent mapping and filtering, learned from conntrack after SNAT.
cone_table() {
  cat <<NFT
table ip nat {
  map cone { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout 2m; }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    iifname "$wan" meta l4proto udp dnat ip to udp dport map @cone
  }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname "$wan" ip saddr $lan_net masquerade
  }
  chain learn { type filter hook postrouting priority 200; policy accept;
    oifname "$wan" meta l4proto udp ct direction original update @cone { ct reply proto-dst : ct original ip saddr . ct original proto-src }
  }
}
NFT
}

ruleset() {
  echo "flush ruleset"
  case "$kind" in
    port-restricted) # R1 + a stateful WAN input firewall: EIM + APDF, port preserving.
      # Without the firewall an unsolicited datagram (the Teredo cone probe's RA from the
      # server's secondary address) gets a conntrack entry when delivered to the router
      # itself, and that entry keeps masquerade from reusing the external port toward the
      # secondary: the client sees a new port and concludes "symmetric NAT" (measured here:
      # xp-sp2 offline, win7 "symmetric (port)"). Dropped before conntrack confirms it, the
      # datagram reserves nothing -- what any home router's input firewall does.
      masquerade_table ""
      cat <<NFT
table inet firewall {
  chain input { type filter hook input priority filter; policy accept;
    iifname "$wan" ct state new counter drop
  }
}
NFT
      ;;
    symmetric) # R3: APDM + APDF, random ports
      masquerade_table "random,fully-random" ;;
    full-cone) # R4
      cone_table ;;
    restricted) # R5: R4 + a permit set keyed by (internal IP, port, remote IP)
      cone_table
      cat <<NFT
table ip filter {
  set permit_a { type ipv4_addr . inet_service . ipv4_addr; flags dynamic,timeout; timeout 2m; }
  chain forward { type filter hook forward priority filter; policy accept;
    iifname "$lan" oifname "$wan" meta l4proto udp update @permit_a { ip saddr . udp sport . ip daddr }
    iifname "$wan" meta l4proto udp ct status dnat ip daddr . udp dport . ip saddr != @permit_a counter drop
  }
}
NFT
      ;;
    *) die "unknown NAT kind $kind" ;;
  esac
  # Forward only between this LAN and the WAN: nothing else is routed.
  cat <<NFT
table ip guard {
  chain forward { type filter hook forward priority filter - 10; policy drop;
    iifname "$lan" oifname "$wan" accept
    iifname "$wan" oifname "$lan" accept
  }
}
NFT
}

ruleset >/run/nat.nft
nft -f /run/nat.nft
conntrack -F 2>/dev/null || true
log "WAN $wan $wan_ip, LAN $lan $lan_net, rules:"
nft list ruleset >&2
touch /run/lab-ready
idle
