#!/usr/bin/env bash
# mgre end-to-end throughput benchmark: one TCP flow (iperf3), compared with
# a plain veth path and with kernel VXLAN over the very same underlay.
#
#   sudo examples/bench.sh                  # BENCH_SECONDS=5 per measurement
#   sudo BENCH_SECONDS=10 examples/bench.sh
#   sudo SKIP_MGRE=1 examples/bench.sh      # baselines only
#
# All in one run, inside network namespaces owned by this run (mgb<PID>-*),
# documentation addresses only:
#
#  A. two namespaces joined by one veth pair (underlay 192.0.2.0/24,
#     hub 192.0.2.1, spoke 192.0.2.11); iperf3 client on the spoke:
#       1 veth            iperf3 to 192.0.2.1, no tunnel
#       2 vxlan           kernel VXLAN (id 42, dstport 4789), overlay 198.51.100.0/24  <- reference
#       3 mgre gre        mgre hub + spoke, plain GRE, iperf3 to 198.51.100.1
#       4 mgre gre-udp    same with GRE-in-UDP
#  B. an underlay namespace with a bridge, hub 192.0.2.1, spoke1 .11, spoke2 .12:
#       5 bridge          spoke1 -> spoke2 directly over the bridge, no tunnel
#       6 vxlan via hub   kernel VXLAN spoke1 -> hub -> spoke2, routed by the hub  <- reference
#       7 mgre gre        spoke1 -> hub -> spoke2 (hub hairpin), plain GRE
#       8 mgre gre-udp    same with GRE-in-UDP
#
# Prints a Markdown table (Gbit/s, TCP retransmits, ratio against the VXLAN
# reference of the same underlay) and the exact commands to stdout; progress
# goes to stderr. Stops on its own; daemons, iperf3 and namespaces are removed
# on every exit path.
#
# Environment:
#   BENCH_SECONDS=5          iperf3 -t for each measurement
#   SKIP_MGRE=1              measure the baselines only (the mgre rows skipped);
#                            without it a missing/unbuildable mgre makes those rows
#                            FAIL (the baselines are still measured and printed)
#   MGRE_BIN=/path/to/mgre   use this binary instead of `cargo build --release -p mgre`
#   BENCH_KEY=42             GRE key of the mgre tunnels ("none": no key)
#   BENCH_CHECKSUM=false     mgre `checksum` (kernel VXLAN sends no UDP checksum by default)
#   BENCH_SEQUENCE=false     mgre `sequence`
#   BENCH_KEEP_TMP=1         keep the temp dir (generated configs, logs) even on success
#
# Exit status: 0 if every measurement that was not skipped succeeded.

set -euo pipefail

LOG_TAG=bench
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

T=${BENCH_SECONDS:-5}
SKIP_MGRE=${SKIP_MGRE:-0}
KEY=${BENCH_KEY:-42}
CHECKSUM=${BENCH_CHECKSUM:-false}
SEQUENCE=${BENCH_SEQUENCE:-false}
READY_TIMEOUT=20

P="mgb$$"
MGRE_UNAVAILABLE="" # reason the mgre rows are skipped, if any
ANY_FAIL=0

# table rows
R_UNDERLAY=()
R_PATH=()
R_GBPS=()
R_RETR=()
R_REF=()    # index of the VXLAN reference row for the ratio
R_STATUS=() # ok | FAIL: ... | skipped: ...
R_CMD=()

[[ $T =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer (got '$T')"
[[ $KEY =~ ^([0-9]+|none)$ ]] || die "BENCH_KEY must be a number or 'none'"
[[ $CHECKSUM =~ ^(true|false)$ ]] || die "BENCH_CHECKSUM must be true or false"
[[ $SEQUENCE =~ ^(true|false)$ ]] || die "BENCH_SEQUENCE must be true or false"

# daemons, iperf3, namespaces and (unless a row failed) $TMP go on every exit path
install_cleanup_traps BENCH_KEEP_TMP "generated configs and logs"

#--------------------------------------------------------------------------
# prerequisites
#--------------------------------------------------------------------------
require_root
install_missing ip:iproute2 ss:iproute2 bridge:iproute2 ping:iputils-ping iperf3:iperf3

make_tmp bench

if [[ $SKIP_MGRE == 1 ]]; then
	MGRE_UNAVAILABLE="SKIP_MGRE=1"
elif [[ -n ${MGRE_BIN:-} ]]; then
	MGRE=$MGRE_BIN
	[[ -x $MGRE ]] || MGRE_UNAVAILABLE="MGRE_BIN=$MGRE_BIN is not executable"
elif build_mgre optional; then
	use_built_mgre
	[[ -x $MGRE ]] || MGRE_UNAVAILABLE="no binary at $MGRE"
else
	MGRE_UNAVAILABLE="cargo build --release -p mgre failed"
fi
[[ -c /dev/net/tun ]] || [[ -n $MGRE_UNAVAILABLE ]] || MGRE_UNAVAILABLE="/dev/net/tun missing"
[[ -z $MGRE_UNAVAILABLE ]] || log "mgre rows will not run: $MGRE_UNAVAILABLE"

#--------------------------------------------------------------------------
# measurement helpers
#--------------------------------------------------------------------------
# add_row UNDERLAY PATH REF-INDEX STATUS GBPS RETR CMD; prints the new index
add_row() {
	R_UNDERLAY+=("$1")
	R_PATH+=("$2")
	R_REF+=("$3")
	R_STATUS+=("$4")
	R_GBPS+=("$5")
	R_RETR+=("$6")
	R_CMD+=("$7")
	if [[ $4 == FAIL* ]]; then ANY_FAIL=1; fi
	log "row $((${#R_PATH[@]})): $1 / $2: $4 ${5:+$5 Gbit/s}"
}

# run_iperf CLIENT_NS SERVER_NS DST: one TCP flow for $T seconds.
# Sets IPERF_GBPS, IPERF_RETR, IPERF_CMD, IPERF_ERR; returns 1 on failure.
IPERF_GBPS="" IPERF_RETR="" IPERF_CMD="" IPERF_ERR=""
run_iperf() {
	local cns=$1 sns=$2 dst=$3 spid out
	IPERF_GBPS="" IPERF_RETR="" IPERF_ERR=""
	IPERF_CMD="ip netns exec $cns iperf3 -c $dst -t $T -f g   (server: ip netns exec $sns iperf3 -s -1 -B $dst)"
	# connectivity first, so a broken path fails fast instead of in iperf3
	if ! run_tracked "$TMP/ping.out" timeout 15 ip netns exec "$cns" ping -c 3 -i 0.2 -W 2 "$dst"; then
		IPERF_ERR="no ping reply from $dst"
		return 1
	fi
	start_iperf_server "$sns" "$dst" "$T" >>"$TMP/iperf3-server.log" 2>&1
	spid=$SPAWNED_PID
	log "iperf3 -c $dst -t $T ($cns -> $sns)"
	if run_tracked "$TMP/iperf3-client.out" timeout $((T + 20)) ip netns exec "$cns" iperf3 -c "$dst" -t "$T" -f g; then
		out=$(<"$TMP/iperf3-client.out")
		printf '%s\n' "$out" >>"$TMP/iperf3-client.log"
		iperf_parse "$out"
		[[ $IPERF_RETR =~ ^[0-9]+$ ]] || IPERF_RETR=""
		[[ -n $IPERF_GBPS ]] || IPERF_ERR="unparsable iperf3 output"
	else
		out=$(<"$TMP/iperf3-client.out")
		printf '%s\n' "$out" >>"$TMP/iperf3-client.log"
		IPERF_ERR="iperf3 failed: $(tail -n 1 <<<"$out")"
	fi
	stop_pid "$spid" 2
	[[ -z $IPERF_ERR ]]
}

# measure UNDERLAY PATH REF CLIENT_NS SERVER_NS DST
measure() {
	if run_iperf "$4" "$5" "$6"; then
		add_row "$1" "$2" "$3" ok "$IPERF_GBPS" "$IPERF_RETR" "$IPERF_CMD"
	else
		add_row "$1" "$2" "$3" "FAIL: $IPERF_ERR" "" "" "$IPERF_CMD"
	fi
}

#--------------------------------------------------------------------------
# mgre helpers
#--------------------------------------------------------------------------
# gen_cfg FILE ROLE TUNNEL-ADDR NBMA PEER...   (PEER = name|nbma|encap|map)
gen_cfg() {
	local file=$1 role=$2 addr=$3 nbma=$4 peer name pnbma encap map
	shift 4
	{
		echo "# generated by examples/bench.sh"
		echo "version = 1"
		echo
		echo "[daemon]"
		echo "socket = \"${file%.toml}.sock\""
		echo 'log = "warn"'
		echo
		echo "[tunnel]"
		echo 'name = "mgre0"'
		echo "role = \"$role\""
		echo "address = [\"$addr\"]"
		echo "nbma = \"$nbma\""
		echo "underlay-mtu = 1500"
		if [[ $KEY != none ]]; then echo "key = $KEY"; fi
		echo "checksum = $CHECKSUM"
		echo "sequence = $SEQUENCE"
		echo "routes = []"
		if [[ $role == spoke ]]; then echo 'nhs = "hub"'; fi
		for peer in "$@"; do
			IFS='|' read -r name pnbma encap map <<<"$peer"
			echo
			echo "[[peer]]"
			echo "name = \"$name\""
			echo "nbma = \"$pnbma\""
			echo "encap = \"$encap\""
			echo "map = [\"$map\"]"
		done
	} >"$file"
}

declare -A DPID=()
# start_daemon LABEL NS CONFIG
start_daemon() {
	local label=$1 ns=$2 cfg=$3 out
	if ! out=$(timeout 10 "$MGRE" check --config "$cfg" 2>&1); then
		log "mgre check failed for $cfg: $out"
		return 1
	fi
	spawn_tracked "mgre $label" ip netns exec "$ns" "$MGRE" run --config "$cfg" >"${cfg%.toml}.log" 2>&1
	DPID[$label]=$SPAWNED_PID
}

# stop_daemons LABEL...: SIGTERM each; returns 1 if one did not exit 0
stop_daemons() {
	local label rc=0
	for label in "$@"; do
		[[ -n ${DPID[$label]:-} ]] || continue
		stop_pid "${DPID[$label]}" 5
		if ((STOP_RC != 0)); then
			log "mgre $label exited with status $STOP_RC on SIGTERM"
			rc=1
		fi
		unset "DPID[$label]"
	done
	return "$rc"
}

# mgre_row UNDERLAY PATH REF CLIENT_NS SERVER_NS DST "LABEL|NS|CONFIG"...
# (configs already generated; daemons started, measured, stopped)
mgre_row() {
	local underlay=$1 path=$2 ref=$3 cns=$4 sns=$5 dst=$6 d label ns cfg ok=1 labels=()
	shift 6
	if [[ $SKIP_MGRE == 1 ]]; then
		add_row "$underlay" "$path" "$ref" "skipped (SKIP_MGRE=1)" "" "" ""
		return 0
	fi
	if [[ -n $MGRE_UNAVAILABLE ]]; then
		add_row "$underlay" "$path" "$ref" "FAIL: $MGRE_UNAVAILABLE" "" "" ""
		return 0
	fi
	for d in "$@"; do
		IFS='|' read -r label ns cfg <<<"$d"
		labels+=("$label")
		if ! start_daemon "$label" "$ns" "$cfg"; then ok=0; break; fi
	done
	if ((ok)); then
		for d in "$@"; do
			IFS='|' read -r label ns cfg <<<"$d"
			wait_mgre_ready "$label" "${DPID[$label]}" "${cfg%.toml}.sock" "${cfg%.toml}.log" " not ready" || ok=0
		done
	fi
	if ((!ok)); then
		stop_daemons "${labels[@]}" || true
		add_row "$underlay" "$path" "$ref" "FAIL: mgre did not start (logs in $TMP)" "" "" ""
		return 0
	fi
	local daemons=""
	for d in "$@"; do
		IFS='|' read -r label ns cfg <<<"$d"
		daemons+="; ip netns exec $ns mgre run --config $(basename "$cfg")"
	done
	if run_iperf "$cns" "$sns" "$dst"; then
		add_row "$underlay" "$path" "$ref" ok "$IPERF_GBPS" "$IPERF_RETR" "$IPERF_CMD$daemons"
	else
		add_row "$underlay" "$path" "$ref" "FAIL: $IPERF_ERR" "" "" "$IPERF_CMD$daemons"
	fi
	# keep the hub's counters of this run next to the logs
	for d in "$@"; do
		IFS='|' read -r label ns cfg <<<"$d"
		timeout 5 "$MGRE" show stats --json --socket "${cfg%.toml}.sock" >"${cfg%.toml}.stats.json" 2>&1 || true
	done
	if ! stop_daemons "${labels[@]}"; then
		R_STATUS[-1]="${R_STATUS[-1]} (unclean daemon exit)"
		ANY_FAIL=1
	fi
}

#--------------------------------------------------------------------------
# A. one veth pair: hub 192.0.2.1 <-> spoke 192.0.2.11
#--------------------------------------------------------------------------
HUB="$P-hub"
SPK="$P-spoke"
log "A: veth pair $SPK <-> $HUB"
new_ns "$HUB"
new_ns "$SPK"
ip -n "$HUB" link add eth0 type veth peer name eth0 netns "$SPK"
ip -n "$HUB" addr add 192.0.2.1/24 dev eth0
ip -n "$SPK" addr add 192.0.2.11/24 dev eth0
ip -n "$HUB" link set eth0 up
ip -n "$SPK" link set eth0 up
A_VETH="veth pair"
REF_A=$((${#R_PATH[@]} + 2)) # the VXLAN row below

measure "$A_VETH" "veth: spoke -> hub, no tunnel" "$REF_A" "$SPK" "$HUB" 192.0.2.1

VX="vxlan id 42 dstport 4789"
ip -n "$HUB" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.1 remote 192.0.2.11 dev eth0
ip -n "$SPK" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.11 remote 192.0.2.1 dev eth0
ip -n "$HUB" addr add 198.51.100.1/24 dev vx42
ip -n "$SPK" addr add 198.51.100.11/24 dev vx42
ip -n "$HUB" link set vx42 up
ip -n "$SPK" link set vx42 up
measure "$A_VETH" "kernel VXLAN ($VX): spoke -> hub" "$REF_A" "$SPK" "$HUB" 198.51.100.1
ip -n "$HUB" link del vx42
ip -n "$SPK" link del vx42

for encap in gre gre-udp; do
	gen_cfg "$TMP/a-hub-$encap.toml" hub 198.51.100.1/24 192.0.2.1 "spoke|192.0.2.11|$encap|198.51.100.11/32"
	gen_cfg "$TMP/a-spoke-$encap.toml" spoke 198.51.100.11/24 192.0.2.11 "hub|192.0.2.1|$encap|198.51.100.1/32"
	mgre_row "$A_VETH" "mgre $encap: spoke -> hub" "$REF_A" "$SPK" "$HUB" 198.51.100.1 \
		"hub|$HUB|$TMP/a-hub-$encap.toml" "spoke|$SPK|$TMP/a-spoke-$encap.toml"
done

# The same GRE-in-UDP path with the three example plugins loaded on both ends.
if [[ $SKIP_MGRE != 1 && -z $MGRE_UNAVAILABLE ]] && build_plugins; then
	cp "$TMP/a-hub-gre-udp.toml" "$TMP/a-hub-plugins.toml"
	cp "$TMP/a-spoke-gre-udp.toml" "$TMP/a-spoke-plugins.toml"
	sed -i "s|^socket = .*|socket = \"$TMP/a-hub-plugins.sock\"|" "$TMP/a-hub-plugins.toml"
	sed -i "s|^socket = .*|socket = \"$TMP/a-spoke-plugins.sock\"|" "$TMP/a-spoke-plugins.toml"
	add_example_plugins "$TMP/a-hub-plugins.toml" "$TMP/plugins-hub"
	add_example_plugins "$TMP/a-spoke-plugins.toml" "$TMP/plugins-spoke"
	mgre_row "$A_VETH" "mgre gre-udp + 3 plugins on both ends: spoke -> hub" "$REF_A" "$SPK" "$HUB" 198.51.100.1 \
		"hub|$HUB|$TMP/a-hub-plugins.toml" "spoke|$SPK|$TMP/a-spoke-plugins.toml"
	PLUGIN_ROW=$((${#R_PATH[@]}))
else
	add_row "$A_VETH" "mgre gre-udp + 3 plugins on both ends: spoke -> hub" "$REF_A" "skipped (no mgre or plugins)" "" "" ""
	PLUGIN_ROW=""
fi

del_ns "$SPK"
del_ns "$HUB"

#--------------------------------------------------------------------------
# B. bridge: hub 192.0.2.1, spoke1 192.0.2.11, spoke2 192.0.2.12
#--------------------------------------------------------------------------
UL="$P-ul"
BHUB="$P-bhub"
S1="$P-s1"
S2="$P-s2"
log "B: bridge in $UL with $BHUB, $S1, $S2"
new_ns "$UL"
ip -n "$UL" link add br0 type bridge
ip -n "$UL" link set br0 up
for pair in "$BHUB:hub:192.0.2.1" "$S1:spoke1:192.0.2.11" "$S2:spoke2:192.0.2.12"; do
	IFS=: read -r ns port addr <<<"$pair"
	new_ns "$ns"
	# a hub that routes spoke -> spoke must not tell the spokes to go direct
	nssysctl "$ns" net.ipv4.conf.all.send_redirects 0
	nssysctl "$ns" net.ipv4.conf.default.send_redirects 0
	nssysctl "$ns" net.ipv4.conf.all.accept_redirects 0
	nssysctl "$ns" net.ipv4.conf.default.accept_redirects 0
	ip -n "$UL" link add "$port" type veth peer name eth0 netns "$ns"
	ip -n "$UL" link set "$port" master br0 up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
done
nssysctl "$BHUB" net.ipv4.ip_forward 1
B_UL="bridge"
REF_B=$((${#R_PATH[@]} + 2)) # the VXLAN row below

measure "$B_UL" "veth+bridge: spoke1 -> spoke2 direct, no tunnel" "$REF_B" "$S1" "$S2" 192.0.2.12

ip -n "$BHUB" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.1 dev eth0
ip netns exec "$BHUB" bridge fdb append 00:00:00:00:00:00 dev vx42 dst 192.0.2.11
ip netns exec "$BHUB" bridge fdb append 00:00:00:00:00:00 dev vx42 dst 192.0.2.12
ip -n "$S1" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.11 remote 192.0.2.1 dev eth0
ip -n "$S2" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.12 remote 192.0.2.1 dev eth0
ip -n "$BHUB" addr add 198.51.100.1/24 dev vx42
ip -n "$S1" addr add 198.51.100.11/24 dev vx42
ip -n "$S2" addr add 198.51.100.12/24 dev vx42
for ns in "$BHUB" "$S1" "$S2"; do ip -n "$ns" link set vx42 up; done
ip -n "$S1" route add 198.51.100.12/32 via 198.51.100.1 dev vx42
ip -n "$S2" route add 198.51.100.11/32 via 198.51.100.1 dev vx42
measure "$B_UL" "kernel VXLAN ($VX): spoke1 -> hub -> spoke2 (routed by the hub)" "$REF_B" "$S1" "$S2" 198.51.100.12
for ns in "$BHUB" "$S1" "$S2"; do ip -n "$ns" link del vx42; done

for encap in gre gre-udp; do
	gen_cfg "$TMP/b-hub-$encap.toml" hub 198.51.100.1/24 192.0.2.1 \
		"spoke1|192.0.2.11|$encap|198.51.100.11/32" "spoke2|192.0.2.12|$encap|198.51.100.12/32"
	gen_cfg "$TMP/b-spoke1-$encap.toml" spoke 198.51.100.11/24 192.0.2.11 "hub|192.0.2.1|$encap|198.51.100.1/32"
	gen_cfg "$TMP/b-spoke2-$encap.toml" spoke 198.51.100.12/24 192.0.2.12 "hub|192.0.2.1|$encap|198.51.100.1/32"
	mgre_row "$B_UL" "mgre $encap: spoke1 -> hub -> spoke2 (hairpin)" "$REF_B" "$S1" "$S2" 198.51.100.12 \
		"hub|$BHUB|$TMP/b-hub-$encap.toml" "spoke1|$S1|$TMP/b-spoke1-$encap.toml" \
		"spoke2|$S2|$TMP/b-spoke2-$encap.toml"
done

#--------------------------------------------------------------------------
# report
#--------------------------------------------------------------------------
ratio() { # ratio A B -> A/B with 2 decimals, or "-"
	awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'
}

mgre_rev=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
{
	echo "## mgre single-flow TCP throughput"
	echo
	echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs${cpu:+ ($cpu)}"
	echo "- $(iperf3 --version | head -n 1), iperf3 -t $T, 1 TCP flow, client on the (first) spoke"
	echo "- mgre $mgre_rev: key=$KEY checksum=$CHECKSUM sequence=$SEQUENCE, underlay MTU 1500"
	echo "- ratio = Gbit/s / Gbit/s of the kernel VXLAN row (*) of the same underlay"
	echo
	echo "| # | underlay | path | Gbit/s | TCP retr | vs VXLAN |"
	echo "|--:|----------|------|-------:|---------:|---------:|"
	for i in "${!R_PATH[@]}"; do
		n=$((i + 1))
		ref=${R_REF[i]}
		path=${R_PATH[i]}
		if [[ $ref -eq $n ]]; then path="$path (*)"; fi
		if [[ ${R_STATUS[i]} == ok* ]]; then
			gbps=${R_GBPS[i]}
			r=$(ratio "$gbps" "${R_GBPS[ref - 1]}")
			if [[ $r != - ]]; then r="${r}x"; fi
			if [[ ${R_STATUS[i]} != ok ]]; then path="$path — ${R_STATUS[i]#ok }"; fi
		else
			gbps=${R_STATUS[i]}
			r="-"
		fi
		echo "| $n | ${R_UNDERLAY[i]} | $path | $gbps | ${R_RETR[i]:--} | $r |"
	done
	if [[ -n ${PLUGIN_ROW:-} && ${R_STATUS[PLUGIN_ROW - 1]} == ok* && ${R_STATUS[PLUGIN_ROW - 2]} == ok* ]]; then
		echo
		echo "Plugins on / off (row $PLUGIN_ROW / row $((PLUGIN_ROW - 1))): $(ratio "${R_GBPS[PLUGIN_ROW - 1]}" "${R_GBPS[PLUGIN_ROW - 2]}")x"
	fi
	echo
	echo "Commands (namespaces mgb$$-*):"
	echo
	echo '```'
	for i in "${!R_PATH[@]}"; do
		if [[ -n ${R_CMD[i]} ]]; then echo "$((i + 1)): ${R_CMD[i]}"; fi
	done
	echo "$VX setup: ip link add vx42 type vxlan id 42 dstport 4789 local <self> remote <peer> dev eth0" \
		"(hub in B: no remote, bridge fdb append 00:00:00:00:00:00 dev vx42 dst <spoke> per spoke)"
	echo '```'
	# shellcheck disable=SC2016 # Markdown backquotes, nothing to expand
	if [[ -z $MGRE_UNAVAILABLE && $SKIP_MGRE != 1 ]]; then
		echo
		echo 'Generated mgre configs, B / gre (gre-udp rows: `encap = "gre-udp"`; A: hub + one spoke):'
		for f in b-hub-gre b-spoke1-gre; do
			echo
			# shellcheck disable=SC2016
			printf '`%s.toml`:\n' "$f"
			echo
			echo '```toml'
			grep -v '^#' "$TMP/$f.toml" || true
			echo '```'
		done
	fi
	echo
	echo "Run: BENCH_SECONDS=$T SKIP_MGRE=$SKIP_MGRE BENCH_KEY=$KEY BENCH_CHECKSUM=$CHECKSUM" \
		"BENCH_SEQUENCE=$SEQUENCE${MGRE_BIN:+ MGRE_BIN=$MGRE_BIN} $0"
}

if ((ANY_FAIL)); then exit 1; fi
exit 0
