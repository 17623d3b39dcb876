#!/usr/bin/env bash
# mgre end-to-end demo on the reference topology of docs/contract.md.
#
#   sudo examples/demo.sh
#
# Builds mgre (cargo build --release -p mgre), then creates, inside network
# namespaces owned by this run only (names mgd<PID>-*):
#
#              +------------------ mgd<PID>-ul: bridge br0 ------------------+
#              |                  |                  |                       |
#          192.0.2.1         192.0.2.11         192.0.2.12              192.0.2.13
#             hub              spoke1             spoke2                  spoke3
#        (mgre, hub.toml)    (gre)              (gre)                  (gre-udp)
#             |                 |                  |                       |
#      203.0.113.192/26   203.0.113.0/26    203.0.113.64/26         203.0.113.128/26
#      2001:db8:ff::/64   2001:db8:1::/64   2001:db8:2::/64         2001:db8:3::/64
#          hub-LAN           spoke1-LAN        spoke2-LAN              spoke3-LAN
#
# runs `mgre run` with examples/{hub,spoke1,spoke2,spoke3}.toml (copied to a
# temp dir, only the control socket path rewritten), checks connectivity
# (ping IPv4/IPv6, one iperf3 TCP transfer) with three policy plugins on the hub,
# shows `mgre show peers/stats/plugins`
# of the hub and prints a PASS/FAIL report. Exit status 0 only if every check
# passed. Everything (daemons, iperf3, namespaces) is removed on every exit path.
#
# Only documentation address ranges are used, and only inside the namespaces.
#
# Environment:
#   MGRE_BIN=/path/to/mgre   use this binary, do not build
#   DEMO_IPERF_SECONDS=3     duration of the iperf3 transfer
#   DEMO_KEEP_TMP=1          keep the temp dir (configs, logs) also on success
#                            (it is always kept when a check fails, exit status 1)

set -euo pipefail

LOG_TAG=demo
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

IPERF_SECONDS=${DEMO_IPERF_SECONDS:-3}
READY_TIMEOUT=30 # seconds to wait for each daemon's control socket

P="mgd$$"
NS_UL="$P-ul"
SITES=(hub spoke1 spoke2 spoke3)
declare -A NS=([hub]="$P-hub" [spoke1]="$P-s1" [spoke2]="$P-s2" [spoke3]="$P-s3")
declare -A LANNS=([hub]="$P-hublan" [spoke1]="$P-lan1" [spoke2]="$P-lan2" [spoke3]="$P-lan3")
declare -A NBMA=([hub]=192.0.2.1 [spoke1]=192.0.2.11 [spoke2]=192.0.2.12 [spoke3]=192.0.2.13)
# LAN: router address/prefix, host address, v6 router/prefix, v6 host
declare -A LAN4=([hub]=203.0.113.193/26 [spoke1]=203.0.113.1/26 [spoke2]=203.0.113.65/26 [spoke3]=203.0.113.129/26)
declare -A HOST4=([hub]=203.0.113.194 [spoke1]=203.0.113.2 [spoke2]=203.0.113.66 [spoke3]=203.0.113.130)
declare -A LAN6=([hub]=2001:db8:ff::1/64 [spoke1]=2001:db8:1::1/64 [spoke2]=2001:db8:2::1/64 [spoke3]=2001:db8:3::1/64)
declare -A HOST6=([hub]=2001:db8:ff::2 [spoke1]=2001:db8:1::2 [spoke2]=2001:db8:2::2 [spoke3]=2001:db8:3::2)

CHECK_LINES=()
FAILED=0
THROUGHPUT="n/a"

# record_check PASS|FAIL "description"
record_check() {
	CHECK_LINES+=("$(printf '%-4s  %s' "$1" "$2")")
	if [[ $1 != PASS ]]; then FAILED=$((FAILED + 1)); fi
	log "$1: $2"
}

# daemons, iperf3, namespaces and (unless a check failed) $TMP go on every exit path
install_cleanup_traps DEMO_KEEP_TMP "configs and logs"

#--------------------------------------------------------------------------
# 0. prerequisites
#--------------------------------------------------------------------------
require_root
install_missing ip:iproute2 ss:iproute2 ping:iputils-ping iperf3:iperf3
[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing (TUN support required)"

if [[ -n ${MGRE_BIN:-} ]]; then
	MGRE=$MGRE_BIN
	log "using MGRE_BIN=$MGRE (no build)"
else
	build_mgre require
	use_built_mgre
fi
[[ -x $MGRE ]] || die "mgre binary not found at $MGRE"
build_plugins || die "building the example plugins for wasm32-unknown-unknown failed"

make_tmp demo

#--------------------------------------------------------------------------
# 1. configs: the examples, with only the socket path rewritten
#--------------------------------------------------------------------------
declare -A CFG SOCK
for site in "${SITES[@]}"; do
	src="$SCRIPT_DIR/$site.toml"
	[[ -r $src ]] || die "missing $src"
	CFG[$site]="$TMP/$site.toml"
	SOCK[$site]="$TMP/$site.sock"
	sed -E "s|^([[:space:]]*socket[[:space:]]*=[[:space:]]*)\"[^\"]*\"|\\1\"${SOCK[$site]}\"|" \
		"$src" >"${CFG[$site]}"
	grep -q "^[[:space:]]*socket[[:space:]]*=[[:space:]]*\"${SOCK[$site]}\"" "${CFG[$site]}" ||
		die "could not rewrite the socket path in ${CFG[$site]}"
done
# The hub runs the three example policy plugins (classify -> mark -> route on every packet
# it forwards): dscp-classifier, voip-qos, spoke-policy (allow-all with a blackhole).
add_example_plugins "${CFG[hub]}" "$TMP/plugins-hub"

check_ok=1
for site in "${SITES[@]}"; do
	if out=$(timeout 10 "$MGRE" check --config "${CFG[$site]}" 2>&1) && [[ $out == *": ok"* ]]; then
		record_check PASS "mgre check $site.toml ($out)"
	else
		record_check FAIL "mgre check $site.toml: ${out:-no output}"
		check_ok=0
	fi
done

print_report() {
	local line
	echo
	echo "==================== mgre demo report ===================="
	for line in "${CHECK_LINES[@]}"; do echo "$line"; done
	echo "----------------------------------------------------------"
	echo "iperf3 TCP spoke1-LAN -> spoke2-LAN (via hub): $THROUGHPUT"
	if ((FAILED)); then
		echo "RESULT: FAIL ($FAILED of ${#CHECK_LINES[@]} checks failed)"
	else
		echo "RESULT: PASS (${#CHECK_LINES[@]} checks)"
	fi
	echo "=========================================================="
}

if ((!check_ok)); then
	print_report
	exit 1
fi

#--------------------------------------------------------------------------
# 2. topology
#--------------------------------------------------------------------------
log "creating namespaces $P-*"
new_ns "$NS_UL"
ip -n "$NS_UL" link add br0 type bridge
ip -n "$NS_UL" link set br0 up

for site in "${SITES[@]}"; do
	ns=${NS[$site]}
	lan=${LANNS[$site]}
	new_ns "$ns"
	new_ns "$lan"
	nssysctl "$ns" net.ipv4.ip_forward 1
	nssysctl "$ns" net.ipv6.conf.all.forwarding 1
	# underlay: site eth0 <-> underlay port named after the site, on br0
	ip -n "$NS_UL" link add "$site" type veth peer name eth0 netns "$ns"
	ip -n "$NS_UL" link set "$site" master br0 up
	ip -n "$ns" addr add "${NBMA[$site]}/24" dev eth0
	ip -n "$ns" link set eth0 up
	# LAN: site lan0 <-> LAN host eth0
	ip -n "$ns" link add lan0 type veth peer name eth0 netns "$lan"
	ip -n "$ns" addr add "${LAN4[$site]}" dev lan0
	ip -n "$ns" addr add "${LAN6[$site]}" dev lan0 nodad
	ip -n "$ns" link set lan0 up
	ip -n "$lan" addr add "${HOST4[$site]}/26" dev eth0
	ip -n "$lan" addr add "${HOST6[$site]}/64" dev eth0 nodad
	ip -n "$lan" link set eth0 up
	ip -n "$lan" route add default via "${LAN4[$site]%/*}"
	ip -n "$lan" -6 route add default via "${LAN6[$site]%/*}"
done

#--------------------------------------------------------------------------
# 3. daemons
#--------------------------------------------------------------------------
declare -A DPID
for site in "${SITES[@]}"; do
	log "starting mgre run in ${NS[$site]} (log: $TMP/$site.log)"
	spawn_tracked "mgre $site" ip netns exec "${NS[$site]}" "$MGRE" run --config "${CFG[$site]}" >"$TMP/$site.log" 2>&1
	DPID[$site]=$SPAWNED_PID
done

all_ready=1
for site in "${SITES[@]}"; do
	if wait_mgre_ready "$site" "${DPID[$site]}" "${SOCK[$site]}" "$TMP/$site.log" ": no answer on ${SOCK[$site]}"; then
		record_check PASS "mgre $site up (control socket answers)"
	else
		record_check FAIL "mgre $site up (control socket answers)"
		all_ready=0
	fi
done
if ((!all_ready)); then
	print_report
	exit 1
fi

#--------------------------------------------------------------------------
# 4. traffic
#--------------------------------------------------------------------------
# ping_check FROM-SITE TO-SITE 4|6 "description"
ping_check() {
	local from=$1 to=$2 fam=$3 what=$4 dst out
	if [[ $fam == 4 ]]; then dst=${HOST4[$to]}; else dst=${HOST6[$to]}; fi
	log "ping -$fam $from-LAN -> $to-LAN ($dst)"
	if run_tracked "$TMP/ping.out" timeout 20 ip netns exec "${LANNS[$from]}" ping "-$fam" -c 3 -i 0.2 -W 2 "$dst"; then
		out=$(<"$TMP/ping.out")
		record_check PASS "ping IPv$fam $from-LAN -> $to-LAN $dst ($what): $(grep -o '[0-9]* received' <<<"$out" || true)"
	else
		cat "$TMP/ping.out" >&2
		record_check FAIL "ping IPv$fam $from-LAN -> $to-LAN $dst ($what)"
	fi
}
ping_check spoke1 spoke2 4 "gre, via hub"
ping_check spoke1 spoke2 6 "gre, via hub"
ping_check spoke1 hub 4 "gre"
ping_check spoke1 hub 6 "gre"
ping_check spoke1 spoke3 4 "gre -> hub -> gre-udp"
ping_check spoke1 spoke3 6 "gre -> hub -> gre-udp"

# iperf3: server in spoke2-LAN (one-off, bounded by timeout), client in spoke1-LAN
iperf_check() {
	local dst=${HOST4[spoke2]} spid out
	log "iperf3 -t $IPERF_SECONDS spoke1-LAN -> spoke2-LAN ($dst)"
	start_iperf_server "${LANNS[spoke2]}" "$dst" "$IPERF_SECONDS" >"$TMP/iperf3-server.log" 2>&1
	spid=$SPAWNED_PID
	if run_tracked "$TMP/iperf3-client.log" timeout $((IPERF_SECONDS + 20)) \
		ip netns exec "${LANNS[spoke1]}" iperf3 -c "$dst" -t "$IPERF_SECONDS" -f g; then
		out=$(<"$TMP/iperf3-client.log")
		printf '%s\n' "$out" >&2
		iperf_parse "$out"
		if [[ -n $IPERF_GBPS ]]; then
			THROUGHPUT="$IPERF_GBPS Gbit/s (TCP, 1 flow, ${IPERF_SECONDS}s, retransmits: ${IPERF_RETR:-?})"
			record_check PASS "iperf3 TCP spoke1-LAN -> spoke2-LAN: $IPERF_GBPS Gbit/s"
		else
			record_check FAIL "iperf3 TCP spoke1-LAN -> spoke2-LAN: no result"
		fi
	else
		cat "$TMP/iperf3-client.log" >&2
		record_check FAIL "iperf3 TCP spoke1-LAN -> spoke2-LAN"
	fi
	stop_pid "$spid" 2
}
iperf_check

#--------------------------------------------------------------------------
# 5. what the hub saw
#--------------------------------------------------------------------------
echo
echo "### mgre show peers --socket ${SOCK[hub]}   (hub)"
timeout 5 "$MGRE" show peers --socket "${SOCK[hub]}" || record_check FAIL "mgre show peers (hub)"
echo
echo "### mgre show stats --socket ${SOCK[hub]}   (hub)"
timeout 5 "$MGRE" show stats --socket "${SOCK[hub]}" || record_check FAIL "mgre show stats (hub)"
echo

echo "### mgre show plugins --socket ${SOCK[hub]}   (hub)"
timeout 5 "$MGRE" show plugins --socket "${SOCK[hub]}" || record_check FAIL "mgre show plugins (hub)"
echo
if plugins=$(timeout 5 "$MGRE" show plugins --json --socket "${SOCK[hub]}" 2>&1); then
	active=$(grep -c '"state": "active"' <<<"$plugins" || true)
	idle=$(grep -c '"calls": 0,' <<<"$plugins" || true)
	if [[ $active -eq 3 && $idle -eq 0 ]]; then
		record_check PASS "hub plugins: 3 active, each called on the forwarded traffic"
	else
		record_check FAIL "hub plugins: $active of 3 active, $idle never called"
	fi
else
	record_check FAIL "mgre show plugins --json (hub): $plugins"
fi

# The hub must have re-encapsulated spoke-to-spoke traffic without the TUN.
if stats=$(timeout 5 "$MGRE" show stats --json --socket "${SOCK[hub]}" 2>&1); then
	# no jq needed: flatten, cut out the "hairpin" object, then its "packets" (any key order)
	hairpin=$(tr -d ' \t\r\n' <<<"$stats" | sed -nE 's/.*"hairpin":\{([^}]*)\}.*/\1/p' |
		sed -nE 's/(^|.*,)"packets":([0-9]+).*/\2/p')
	if [[ -n $hairpin && $hairpin -gt 0 ]]; then
		record_check PASS "hub hairpin counter: $hairpin packets (spoke -> hub -> spoke without the TUN)"
	else
		record_check FAIL "hub hairpin counter > 0 (got '${hairpin:-unparsable}')"
	fi
else
	record_check FAIL "mgre show stats --json (hub): $stats"
fi

# Prometheus endpoint of the hub (loopback of the hub namespace), no curl needed.
metrics_addr=$(sed -nE 's/^[[:space:]]*metrics[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "${CFG[hub]}")
if [[ -n $metrics_addr ]]; then
	# shellcheck disable=SC2016 # expanded by the inner bash
	metrics=$(ip netns exec "${NS[hub]}" timeout 5 bash -c '
		exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
		printf "GET /metrics HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$1" >&3
		cat <&3' sh "$metrics_addr" 2>&1 || true)
	if grep -q '^HTTP/1\.[01] 200' <<<"$metrics"; then
		record_check PASS "hub metrics http://$metrics_addr/metrics ($(awk 'body && NF && !/^#/ {n++} /^\r?$/ {body = 1} END {print n + 0}' <<<"$metrics") samples)"
	else
		record_check FAIL "hub metrics http://$metrics_addr/metrics"
	fi
fi

#--------------------------------------------------------------------------
# 6. clean shutdown: SIGTERM -> exit 0, TUN removed
#--------------------------------------------------------------------------
for site in "${SITES[@]}"; do
	tun=$(sed -nE 's/^[[:space:]]*name[[:space:]]*=[[:space:]]*"([^"]*)".*/\1/p' "${CFG[$site]}" | head -n 1)
	stop_pid "${DPID[$site]}" 5
	if [[ $STOP_RC -eq 0 ]] && ! ip -n "${NS[$site]}" link show "$tun" >/dev/null 2>&1; then
		record_check PASS "mgre $site: SIGTERM -> exit 0, $tun removed"
	else
		record_check FAIL "mgre $site: SIGTERM -> exit $STOP_RC, $tun $(ip -n "${NS[$site]}" link show "$tun" >/dev/null 2>&1 && echo 'still present' || echo removed)"
	fi
done

print_report
if ((FAILED)); then exit 1; fi
exit 0
