#!/usr/bin/env bash
# mgre end-to-end benchmark: TCP throughput with 1 and 4 flows (iperf3), CPU
# seconds per GB and small-packet rate, each against kernel VXLAN over the very
# same underlay, all in one run.
#
#   sudo examples/bench.sh                  # BENCH_SECONDS=5 per measurement
#   sudo BENCH_SECONDS=10 examples/bench.sh
#   sudo BENCH_SECONDS=2 BENCH_SKIP_SMALL=1 BENCH_SKIP_BRIDGE=1 examples/bench.sh   # quick look
#   sudo SKIP_MGRE=1 examples/bench.sh      # baselines only
#
# All in one run, inside network namespaces owned by this run (mgb<PID>-*),
# documentation addresses only:
#
#  A. two namespaces joined by one veth pair (underlay 192.0.2.0/24, hub
#     192.0.2.1, spoke 192.0.2.11; overlay 198.51.100.0/24); clients and
#     senders on the spoke, servers and receivers on the hub:
#       1 veth             to 192.0.2.1, no tunnel
#       2 vxlan            kernel VXLAN (id 42, dstport 4789) to 198.51.100.1  <- reference
#       3 mgre gre         mgre hub + spoke, plain GRE, to 198.51.100.1
#       4 mgre gre-udp     same with GRE-in-UDP
#       5 mgre gre-udp     same with the three example plugins loaded on both ends
#         + plugins
#       6 mgre gre-udp     same without plugins, two dataplane workers per daemon
#         workers = 2
#     Each row, over one setup of its path (the daemons start once per row):
#       - TCP, 1 flow and BENCH_FLOWS=4 flows (iperf3 -P 4): receiver Gbit/s,
#         TCP retransmits, CPU seconds per GB;
#       - small packets: mgre-blast (tests/src/bin/mgre-blast.rs) sends 64-byte
#         UDP datagrams with sendmmsg, batches of 64, as fast as the kernel takes
#         them, and counts them on the hub with recvmmsg: sent and received kpps.
#         (iperf3's UDP receiver reads one datagram per syscall and saturates
#         long before the paths do.)
#  B. an underlay namespace with a bridge, hub 192.0.2.1, spoke1 .11, spoke2 .12;
#     1 TCP flow, Gbit/s, retransmits and CPU seconds per GB:
#       7 bridge           spoke1 -> spoke2 directly over the bridge, no tunnel
#       8 vxlan via hub    kernel VXLAN spoke1 -> hub -> spoke2, routed by the hub  <- reference
#       9 mgre gre         spoke1 -> hub -> spoke2 (hub hairpin), plain GRE
#      10 mgre gre-udp     same with GRE-in-UDP
#
# CPU seconds per GB: the busy time of all CPUs (user+nice+system+irq+softirq+
# steal in /proc/stat) while the iperf3 client runs, divided by the GB (1e9
# bytes) the iperf3 receiver got. iperf3, the kernel's softirq work and the mgre
# daemons all run on this machine, so this is the whole cost of the path; it
# also counts anything else running, so use an otherwise idle machine (the
# report gives the background load measured just before).
#
# Prints Markdown tables (values, and ratios against the kernel VXLAN row of the
# same underlay) and the exact commands to stdout; progress goes to stderr.
# Stops on its own (every command runs under a timeout); daemons, iperf3,
# mgre-blast and the namespaces are removed on every exit path.
#
# Environment:
#   BENCH_SECONDS=5          length of each measurement (iperf3 -t, mgre-blast --seconds)
#   BENCH_FLOWS=4            TCP flows of the multi-flow measurement (iperf3 -P)
#   BENCH_REPEAT=1           run each TCP measurement this many times and report the
#                            run with the median Gbit/s (its CPU s/GB and retransmits)
#   BENCH_SMALL_SIZE=64      UDP payload bytes of the small-packet test
#   BENCH_SMALL_PPS=0        pace the small-packet sender to this many datagrams/s (0: unpaced)
#   BENCH_SKIP_MULTI=1       skip the multi-flow TCP measurement
#   BENCH_SKIP_SMALL=1       skip the small-packet test (and building mgre-blast)
#   BENCH_SKIP_BRIDGE=1      skip section B
#   SKIP_MGRE=1              measure the baselines only (the mgre rows skipped);
#                            without it a missing/unbuildable mgre makes those rows
#                            FAIL (the baselines are still measured and printed)
#   MGRE_BIN=/path/to/mgre   use this binary instead of `cargo build --release -p mgre`
#   BLAST_BIN=/path/to/mgre-blast  instead of `cargo build --release -p mgre-e2e --bin mgre-blast`
#   BENCH_KEY=42             GRE key of the mgre tunnels ("none": no key)
#   BENCH_CHECKSUM=false     mgre `checksum` (kernel VXLAN sends no UDP checksum by default)
#   BENCH_SEQUENCE=false     mgre `sequence`
#   BENCH_KEEP_TMP=1         keep the temp dir (generated configs, logs, JSON) even on success
#
# Exit status: 0 if every measurement that was not skipped succeeded.

set -euo pipefail

LOG_TAG=bench
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

T=${BENCH_SECONDS:-5}
FLOWS=${BENCH_FLOWS:-4}
REPEAT=${BENCH_REPEAT:-1}
SMALL_SIZE=${BENCH_SMALL_SIZE:-64}
SMALL_PPS=${BENCH_SMALL_PPS:-0}
SKIP_MULTI=${BENCH_SKIP_MULTI:-0}
SKIP_SMALL=${BENCH_SKIP_SMALL:-0}
SKIP_BRIDGE=${BENCH_SKIP_BRIDGE:-0}
SKIP_MGRE=${SKIP_MGRE:-0}
KEY=${BENCH_KEY:-42}
CHECKSUM=${BENCH_CHECKSUM:-false}
SEQUENCE=${BENCH_SEQUENCE:-false}
READY_TIMEOUT=20
BLAST_PORT=5300

P="mgb$$"
MGRE_UNAVAILABLE=""  # reason the mgre rows are skipped, if any
BLAST_UNAVAILABLE="" # reason the small-packet test cannot run, if any
ANY_FAIL=0

# table rows (index = row number - 1); cells: a value, FAIL, or "" (not measured)
R_UNDERLAY=()
R_PATH=()
R_REF=()  # row number of the VXLAN reference row for the ratios
R_NOTE=() # "" or why something in the row failed or was skipped
R_CMD=()  # commands of the row, one per line
R_G1=()   # 1 flow: Gbit/s, CPU s/GB, TCP retransmits
R_C1=()
R_T1=()
R_GN=()   # FLOWS flows: the same
R_CN=()
R_TN=()
R_TX=()   # small packets: sent kpps, received kpps, received/sent %
R_RX=()
R_DLV=()
CUR=-1 # index of the row being measured

[[ $T =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer (got '$T')"
[[ $FLOWS =~ ^[1-9][0-9]?$ ]] || die "BENCH_FLOWS must be 1..99 (got '$FLOWS')"
if ! [[ $SMALL_SIZE =~ ^[0-9]+$ ]] || ((SMALL_SIZE > 1400)); then die "BENCH_SMALL_SIZE must be 0..1400"; fi
[[ $SMALL_PPS =~ ^[0-9]+$ ]] || die "BENCH_SMALL_PPS must be a number (0: unpaced)"
for v in SKIP_MULTI SKIP_SMALL SKIP_BRIDGE SKIP_MGRE; do
	[[ ${!v} =~ ^[01]$ ]] || die "$v must be 0 or 1"
done
[[ $KEY =~ ^([0-9]+|none)$ ]] || die "BENCH_KEY must be a number or 'none'"
[[ $CHECKSUM =~ ^(true|false)$ ]] || die "BENCH_CHECKSUM must be true or false"
[[ $SEQUENCE =~ ^(true|false)$ ]] || die "BENCH_SEQUENCE must be true or false"

# what each row of A and B measures
A_TESTS="tcp1"
if [[ $SKIP_MULTI != 1 ]]; then A_TESTS+=" tcpn"; fi
if [[ $SKIP_SMALL != 1 ]]; then A_TESTS+=" small"; fi
B_TESTS="tcp1"

# daemons, iperf3, mgre-blast, namespaces and (unless a row failed) $TMP go on every exit path
install_cleanup_traps BENCH_KEEP_TMP "generated configs and logs"

#--------------------------------------------------------------------------
# prerequisites
#--------------------------------------------------------------------------
require_root
install_missing ip:iproute2 ss:iproute2 bridge:iproute2 ping:iputils-ping iperf3:iperf3 jq:jq
CLK_TCK=$(getconf CLK_TCK)
[[ $CLK_TCK =~ ^[1-9][0-9]*$ ]] || die "getconf CLK_TCK gave '$CLK_TCK'"

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

BLAST=""
if [[ $SKIP_SMALL == 1 ]]; then
	BLAST_UNAVAILABLE="BENCH_SKIP_SMALL=1"
elif [[ -n ${BLAST_BIN:-} ]]; then
	BLAST=$BLAST_BIN
	[[ -x $BLAST ]] || BLAST_UNAVAILABLE="BLAST_BIN=$BLAST_BIN is not executable"
elif cargo_release optional -p mgre-e2e --bin mgre-blast; then
	BLAST=$(release_bin mgre-blast)
	[[ -x $BLAST ]] || BLAST_UNAVAILABLE="no binary at $BLAST"
else
	BLAST_UNAVAILABLE="cargo build --release -p mgre-e2e --bin mgre-blast failed"
fi
[[ $SKIP_SMALL == 1 || -z $BLAST_UNAVAILABLE ]] || log "small-packet test will not run: $BLAST_UNAVAILABLE"

#--------------------------------------------------------------------------
# rows
#--------------------------------------------------------------------------
# new_row UNDERLAY PATH REF: a new row (all cells empty) becomes the current one
new_row() {
	R_UNDERLAY+=("$1")
	R_PATH+=("$2")
	R_REF+=("$3")
	CUR=$((${#R_PATH[@]} - 1))
	R_NOTE[CUR]="" R_CMD[CUR]=""
	R_G1[CUR]="" R_C1[CUR]="" R_T1[CUR]=""
	R_GN[CUR]="" R_CN[CUR]="" R_TN[CUR]=""
	R_TX[CUR]="" R_RX[CUR]="" R_DLV[CUR]=""
	log "row $((CUR + 1)): $1 / $2"
}

# row_note TEXT: add TEXT to the current row's note
row_note() {
	R_NOTE[CUR]="${R_NOTE[CUR]:+${R_NOTE[CUR]}; }$1"
	log "row $((CUR + 1)): $1"
}

# row_fail TEXT: note a failure in the current row (the run then exits 1)
row_fail() {
	row_note "FAIL: $1"
	ANY_FAIL=1
}

# row_cmd LINE: add a command line to the current row
row_cmd() {
	R_CMD[CUR]="${R_CMD[CUR]:+${R_CMD[CUR]}$'\n'}$1"
}

# fail_cells TEST...: mark the cells of TESTS (tcp1 tcpn small) FAIL in the current row
fail_cells() {
	local t
	for t in "$@"; do
		case $t in
		tcp1) R_G1[CUR]=FAIL R_C1[CUR]=FAIL ;;
		tcpn) R_GN[CUR]=FAIL R_CN[CUR]=FAIL ;;
		small) R_TX[CUR]=FAIL R_RX[CUR]=FAIL ;;
		esac
	done
}

#--------------------------------------------------------------------------
# measurements
#--------------------------------------------------------------------------
# cpu_busy_ticks: busy clock ticks of all CPUs since boot
# (user + nice + system + irq + softirq + steal; guest time is inside user)
cpu_busy_ticks() {
	local user nice system irq softirq steal
	read -r _ user nice system _ _ irq softirq steal _ </proc/stat
	echo $((user + nice + system + irq + softirq + steal))
}

# run_tcp CLIENT_NS SERVER_NS DST FLOWS: iperf3 with FLOWS TCP flows for $T s.
# Sets TCP_GBPS (receiver), TCP_CPU (CPU s/GB), TCP_RETR, TCP_CMD, TCP_ERR;
# returns 1 on failure.
TCP_GBPS="" TCP_CPU="" TCP_RETR="" TCP_CMD="" TCP_ERR=""
run_tcp() {
	local cns=$1 sns=$2 dst=$3 flows=$4 spid c0 c1 fields bytes bps retr err
	local json="$TMP/iperf3-client.json"
	TCP_GBPS="" TCP_CPU="" TCP_RETR="" TCP_ERR=""
	TCP_CMD="ip netns exec $cns iperf3 -c $dst -t $T -P $flows -J   (server: ip netns exec $sns iperf3 -s -1 -B $dst)"
	start_iperf_server "$sns" "$dst" "$T" >>"$TMP/iperf3-server.log" 2>&1
	spid=$SPAWNED_PID
	log "iperf3 -c $dst -t $T -P $flows ($cns -> $sns)"
	rm -f "$json"
	c0=$(cpu_busy_ticks)
	if ! run_tracked "$TMP/iperf3-client.err" timeout $((T + 20)) ip netns exec "$cns" \
		iperf3 -c "$dst" -t "$T" -P "$flows" -J --logfile "$json"; then
		TCP_ERR="iperf3 exited with an error"
	fi
	c1=$(cpu_busy_ticks)
	stop_pid "$spid" 2
	if [[ -f $json ]]; then cat "$json" >>"$TMP/iperf3-client.log"; fi
	# error last: it is free text and takes the rest of the line
	if ! fields=$(jq -r '[.end.sum_received.bytes, .end.sum_received.bits_per_second,
			.end.sum_sent.retransmits, .error] | map(. // "" | tostring) | join("|")' "$json" 2>/dev/null); then
		TCP_ERR="${TCP_ERR:-iperf3 wrote no JSON}: $(tail -n 1 "$TMP/iperf3-client.err" 2>/dev/null || true)"
		return 1
	fi
	IFS='|' read -r bytes bps retr err <<<"$fields"
	if [[ -n $err ]]; then TCP_ERR="iperf3: $err"; fi
	if [[ -z $TCP_ERR ]] && ! awk -v b="$bytes" 'BEGIN { exit !(b + 0 > 0) }'; then
		TCP_ERR="iperf3 reports no bytes received"
	fi
	[[ -z $TCP_ERR ]] || return 1
	TCP_GBPS=$(awk -v b="$bps" 'BEGIN { printf "%.2f", b / 1e9 }')
	TCP_CPU=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.2f", t / hz / (b / 1e9) }')
	TCP_RETR=$retr
	log "  $TCP_GBPS Gbit/s, $TCP_CPU CPU s/GB, $TCP_RETR retransmits"
}

# run_tcp_median CLIENT_NS SERVER_NS DST FLOWS: run_tcp $REPEAT times; leaves the TCP_*
# results of the run with the median Gbit/s; returns 1 as soon as one run fails.
run_tcp_median() {
	local i runs=() pick
	for ((i = 0; i < REPEAT; i++)); do
		run_tcp "$@" || return 1
		runs+=("$TCP_GBPS $TCP_CPU $TCP_RETR")
	done
	pick=$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | sed -n "$(((${#runs[@]} + 1) / 2))p")
	read -r TCP_GBPS TCP_CPU TCP_RETR <<<"$pick"
	if ((REPEAT > 1)); then
		log "  median of $REPEAT: $TCP_GBPS Gbit/s, $TCP_CPU CPU s/GB"
	fi
}

# blast_field FILE MODE KEY: KEY of mgre-blast's JSON line of MODE in FILE ("" if none)
blast_field() {
	{ grep '^{' "$1" || true; } | jq -r --arg m "$2" "select(.mode == \$m) | .$3 // \"\"" 2>/dev/null || true
}

# run_small CLIENT_NS SERVER_NS DST: mgre-blast recv on DST:$BLAST_PORT in
# SERVER_NS, mgre-blast send to it from CLIENT_NS for $T s. Sets SMALL_TX,
# SMALL_RX (kpps), SMALL_DLV (received/sent %), SMALL_CMD, SMALL_ERR;
# returns 1 on failure.
SMALL_TX="" SMALL_RX="" SMALL_DLV="" SMALL_CMD="" SMALL_ERR=""
run_small() {
	local cns=$1 sns=$2 dst=$3 rpid i tx rx txp rxp
	local target="$dst:$BLAST_PORT" rsecs=$((T + 10))
	local send_args=(send "$target" --seconds "$T" --size "$SMALL_SIZE" --pps "$SMALL_PPS")
	SMALL_TX="" SMALL_RX="" SMALL_DLV="" SMALL_ERR=""
	SMALL_CMD="ip netns exec $cns mgre-blast ${send_args[*]}   (receiver: ip netns exec $sns mgre-blast recv $target --seconds $rsecs)"
	if [[ -n $BLAST_UNAVAILABLE ]]; then
		SMALL_ERR="mgre-blast: $BLAST_UNAVAILABLE"
		return 1
	fi
	# the receiver stops 1 s after its last datagram, at the latest after $rsecs s
	spawn_tracked "mgre-blast recv" ip netns exec "$sns" timeout $((rsecs + 5)) \
		"$BLAST" recv "$target" --seconds "$rsecs" >"$TMP/blast-recv.out" 2>&1
	rpid=$SPAWNED_PID
	for ((i = 0; i < 50; i++)); do
		if [[ -n $(ip netns exec "$sns" ss -Hlun "sport = :$BLAST_PORT" 2>/dev/null) ]]; then break; fi
		sleep 0.1
	done
	log "mgre-blast ${send_args[*]} ($cns -> $sns)"
	if ! run_tracked "$TMP/blast-send.out" timeout $((T + 10)) ip netns exec "$cns" "$BLAST" "${send_args[@]}"; then
		SMALL_ERR="mgre-blast send failed: $(tail -n 1 "$TMP/blast-send.out")"
	fi
	for ((i = 0; i < (rsecs + 5) * 10; i++)); do
		if ! our_child "$rpid" || is_zombie "$rpid"; then break; fi
		sleep 0.1
	done
	stop_pid "$rpid" 2
	if ((STOP_RC != 0)) && [[ -z $SMALL_ERR ]]; then
		SMALL_ERR="mgre-blast recv exited with status $STOP_RC: $(tail -n 1 "$TMP/blast-recv.out")"
	fi
	cat "$TMP/blast-send.out" "$TMP/blast-recv.out" >>"$TMP/blast.log"
	[[ -z $SMALL_ERR ]] || return 1
	tx=$(blast_field "$TMP/blast-send.out" send pps)
	rx=$(blast_field "$TMP/blast-recv.out" recv pps)
	txp=$(blast_field "$TMP/blast-send.out" send packets)
	rxp=$(blast_field "$TMP/blast-recv.out" recv packets)
	if [[ -z $tx || -z $rx || -z $txp || -z $rxp ]]; then
		SMALL_ERR="no result line from mgre-blast (logs in $TMP)"
		return 1
	fi
	SMALL_TX=$(awk -v p="$tx" 'BEGIN { printf "%.1f", p / 1000 }')
	SMALL_RX=$(awk -v p="$rx" 'BEGIN { printf "%.1f", p / 1000 }')
	SMALL_DLV=$(awk -v r="$rxp" -v s="$txp" 'BEGIN { if (s > 0) printf "%.1f", 100 * r / s; else printf "-" }')
	log "  sent $SMALL_TX kpps, received $SMALL_RX kpps ($SMALL_DLV% of $txp datagrams)"
}

# row_tests CLIENT_NS SERVER_NS DST TEST...: measures TESTS (tcp1, tcpn, small)
# over the current row's path and fills its cells
row_tests() {
	local cns=$1 sns=$2 dst=$3 t
	shift 3
	# connectivity first, so a broken path fails fast instead of in iperf3
	if ! run_tracked "$TMP/ping.out" timeout 15 ip netns exec "$cns" ping -c 3 -i 0.2 -W 2 "$dst"; then
		row_fail "no ping reply from $dst"
		fail_cells "$@"
		return 0
	fi
	for t in "$@"; do
		case $t in
		tcp1 | tcpn)
			local flows=1
			if [[ $t == tcpn ]]; then flows=$FLOWS; fi
			if run_tcp_median "$cns" "$sns" "$dst" "$flows"; then
				if [[ $t == tcp1 ]]; then
					R_G1[CUR]=$TCP_GBPS R_C1[CUR]=$TCP_CPU R_T1[CUR]=$TCP_RETR
				else
					R_GN[CUR]=$TCP_GBPS R_CN[CUR]=$TCP_CPU R_TN[CUR]=$TCP_RETR
				fi
			else
				fail_cells "$t"
				row_fail "$flows TCP flow(s): $TCP_ERR"
			fi
			row_cmd "$TCP_CMD"
			;;
		small)
			if run_small "$cns" "$sns" "$dst"; then
				R_TX[CUR]=$SMALL_TX R_RX[CUR]=$SMALL_RX R_DLV[CUR]=$SMALL_DLV
			else
				fail_cells small
				row_fail "small packets: $SMALL_ERR"
			fi
			row_cmd "$SMALL_CMD"
			;;
		*) die "unknown test $t" ;;
		esac
	done
}

# measure UNDERLAY PATH REF CLIENT_NS SERVER_NS DST "TEST..."
measure() {
	local tests
	read -ra tests <<<"$7"
	new_row "$1" "$2" "$3"
	row_tests "$4" "$5" "$6" "${tests[@]}"
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
		if [[ -n ${GEN_WORKERS:-} ]]; then echo "workers = $GEN_WORKERS"; fi
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

# mgre_row UNDERLAY PATH REF CLIENT_NS SERVER_NS DST "TEST..." "LABEL|NS|CONFIG"...
# (configs already generated; daemons started, measured, stopped)
mgre_row() {
	local underlay=$1 path=$2 ref=$3 cns=$4 sns=$5 dst=$6 tests d label ns cfg ok=1 labels=()
	read -ra tests <<<"$7"
	shift 7
	new_row "$underlay" "$path" "$ref"
	if [[ $SKIP_MGRE == 1 ]]; then
		row_note "skipped (SKIP_MGRE=1)"
		return 0
	fi
	if [[ -n $MGRE_UNAVAILABLE ]]; then
		row_fail "$MGRE_UNAVAILABLE"
		fail_cells "${tests[@]}"
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
		row_fail "mgre did not start (logs in $TMP)"
		fail_cells "${tests[@]}"
		return 0
	fi
	for d in "$@"; do
		IFS='|' read -r label ns cfg <<<"$d"
		row_cmd "ip netns exec $ns mgre run --config $(basename "$cfg")"
	done
	row_tests "$cns" "$sns" "$dst" "${tests[@]}"
	# keep each daemon's counters of this row next to its log
	for d in "$@"; do
		IFS='|' read -r label ns cfg <<<"$d"
		timeout 5 "$MGRE" show stats --json --socket "${cfg%.toml}.sock" >"${cfg%.toml}.stats.json" 2>&1 || true
		timeout 5 "$MGRE" show plugins --json --socket "${cfg%.toml}.sock" >"${cfg%.toml}.plugins.json" 2>&1 || true
	done
	if ! stop_daemons "${labels[@]}"; then row_fail "unclean daemon exit"; fi
}

#--------------------------------------------------------------------------
# background load: CPU s/GB counts every CPU cycle spent on this machine
#--------------------------------------------------------------------------
c0=$(cpu_busy_ticks)
sleep 1
c1=$(cpu_busy_ticks)
IDLE_LOAD=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
log "background load: $IDLE_LOAD CPUs busy"
if awk -v l="$IDLE_LOAD" 'BEGIN { exit !(l > 0.2) }'; then
	log "WARNING: the machine is not idle ($IDLE_LOAD CPUs busy): CPU s/GB and rates will suffer"
fi

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
A_FIRST=$((${#R_PATH[@]} + 1)) # first row of A
REF_A=$((A_FIRST + 1))         # the VXLAN row below

measure "$A_VETH" "veth: spoke -> hub, no tunnel" "$REF_A" "$SPK" "$HUB" 192.0.2.1 "$A_TESTS"

VX="vxlan id 42 dstport 4789"
ip -n "$HUB" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.1 remote 192.0.2.11 dev eth0
ip -n "$SPK" link add vx42 type vxlan id 42 dstport 4789 local 192.0.2.11 remote 192.0.2.1 dev eth0
ip -n "$HUB" addr add 198.51.100.1/24 dev vx42
ip -n "$SPK" addr add 198.51.100.11/24 dev vx42
ip -n "$HUB" link set vx42 up
ip -n "$SPK" link set vx42 up
measure "$A_VETH" "kernel VXLAN ($VX): spoke -> hub" "$REF_A" "$SPK" "$HUB" 198.51.100.1 "$A_TESTS"
ip -n "$HUB" link del vx42
ip -n "$SPK" link del vx42

for encap in gre gre-udp; do
	gen_cfg "$TMP/a-hub-$encap.toml" hub 198.51.100.1/24 192.0.2.1 "spoke|192.0.2.11|$encap|198.51.100.11/32"
	gen_cfg "$TMP/a-spoke-$encap.toml" spoke 198.51.100.11/24 192.0.2.11 "hub|192.0.2.1|$encap|198.51.100.1/32"
	mgre_row "$A_VETH" "mgre $encap: spoke -> hub" "$REF_A" "$SPK" "$HUB" 198.51.100.1 "$A_TESTS" \
		"hub|$HUB|$TMP/a-hub-$encap.toml" "spoke|$SPK|$TMP/a-spoke-$encap.toml"
done

# The same GRE-in-UDP path with the three example plugins loaded on both ends.
PLUGIN_PATH="mgre gre-udp + 3 plugins on both ends: spoke -> hub"
if [[ $SKIP_MGRE != 1 && -z $MGRE_UNAVAILABLE ]] && build_plugins; then
	cp "$TMP/a-hub-gre-udp.toml" "$TMP/a-hub-plugins.toml"
	cp "$TMP/a-spoke-gre-udp.toml" "$TMP/a-spoke-plugins.toml"
	sed -i "s|^socket = .*|socket = \"$TMP/a-hub-plugins.sock\"|" "$TMP/a-hub-plugins.toml"
	sed -i "s|^socket = .*|socket = \"$TMP/a-spoke-plugins.sock\"|" "$TMP/a-spoke-plugins.toml"
	add_example_plugins "$TMP/a-hub-plugins.toml" "$TMP/plugins-hub"
	add_example_plugins "$TMP/a-spoke-plugins.toml" "$TMP/plugins-spoke"
	mgre_row "$A_VETH" "$PLUGIN_PATH" "$REF_A" "$SPK" "$HUB" 198.51.100.1 "$A_TESTS" \
		"hub|$HUB|$TMP/a-hub-plugins.toml" "spoke|$SPK|$TMP/a-spoke-plugins.toml"
	PLUGIN_ROW=$((${#R_PATH[@]}))
else
	new_row "$A_VETH" "$PLUGIN_PATH" "$REF_A"
	if [[ $SKIP_MGRE == 1 ]]; then
		row_note "skipped (SKIP_MGRE=1)"
	else
		row_fail "${MGRE_UNAVAILABLE:-building the example plugins failed}"
		read -ra tests <<<"$A_TESTS"
		fail_cells "${tests[@]}"
	fi
	PLUGIN_ROW=""
fi

# GRE-in-UDP again with two dataplane workers per daemon (multi-queue TUN, SO_REUSEPORT).
GEN_WORKERS=2 gen_cfg "$TMP/a-hub-w2.toml" hub 198.51.100.1/24 192.0.2.1 "spoke|192.0.2.11|gre-udp|198.51.100.11/32"
GEN_WORKERS=2 gen_cfg "$TMP/a-spoke-w2.toml" spoke 198.51.100.11/24 192.0.2.11 "hub|192.0.2.1|gre-udp|198.51.100.1/32"
mgre_row "$A_VETH" "mgre gre-udp, workers = 2 on both ends: spoke -> hub" "$REF_A" "$SPK" "$HUB" 198.51.100.1 "$A_TESTS" \
	"hub|$HUB|$TMP/a-hub-w2.toml" "spoke|$SPK|$TMP/a-spoke-w2.toml"
A_LAST=${#R_PATH[@]}

del_ns "$SPK"
del_ns "$HUB"

#--------------------------------------------------------------------------
# B. bridge: hub 192.0.2.1, spoke1 192.0.2.11, spoke2 192.0.2.12
#--------------------------------------------------------------------------
if [[ $SKIP_BRIDGE != 1 ]]; then
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
	B_FIRST=$((${#R_PATH[@]} + 1)) # first row of B
	REF_B=$((B_FIRST + 1))         # the VXLAN row below

	measure "$B_UL" "veth+bridge: spoke1 -> spoke2 direct, no tunnel" "$REF_B" "$S1" "$S2" 192.0.2.12 "$B_TESTS"

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
	measure "$B_UL" "kernel VXLAN ($VX): spoke1 -> hub -> spoke2 (routed by the hub)" "$REF_B" "$S1" "$S2" 198.51.100.12 "$B_TESTS"
	for ns in "$BHUB" "$S1" "$S2"; do ip -n "$ns" link del vx42; done

	for encap in gre gre-udp; do
		gen_cfg "$TMP/b-hub-$encap.toml" hub 198.51.100.1/24 192.0.2.1 \
			"spoke1|192.0.2.11|$encap|198.51.100.11/32" "spoke2|192.0.2.12|$encap|198.51.100.12/32"
		gen_cfg "$TMP/b-spoke1-$encap.toml" spoke 198.51.100.11/24 192.0.2.11 "hub|192.0.2.1|$encap|198.51.100.1/32"
		gen_cfg "$TMP/b-spoke2-$encap.toml" spoke 198.51.100.12/24 192.0.2.12 "hub|192.0.2.1|$encap|198.51.100.1/32"
		mgre_row "$B_UL" "mgre $encap: spoke1 -> hub -> spoke2 (hairpin)" "$REF_B" "$S1" "$S2" 198.51.100.12 "$B_TESTS" \
			"hub|$BHUB|$TMP/b-hub-$encap.toml" "spoke1|$S1|$TMP/b-spoke1-$encap.toml" \
			"spoke2|$S2|$TMP/b-spoke2-$encap.toml"
	done
fi

#--------------------------------------------------------------------------
# report
#--------------------------------------------------------------------------
ratio() { # ratio A B -> "A/Bx" with 2 decimals, or "-" unless both are numbers and B > 0
	awk -v a="$1" -v b="$2" 'BEGIN {
		num = "^[0-9]+([.][0-9]+)?$"
		if (a ~ num && b ~ num && b + 0 > 0) printf "%.2fx", a / b; else printf "-"
	}'
}

# cell VALUE: the value, or "-" when not measured
cell() { printf '%s' "${1:--}"; }

# with_ref ARRAY-NAME I: "| value | ratio against the reference row "
with_ref() {
	local -n arr=$1
	local i=$2 ref=$((R_REF[$2] - 1))
	printf '| %s | %s ' "$(cell "${arr[i]}")" "$(ratio "${arr[i]}" "${arr[ref]}")"
}

# path_cell I: the row's path, (*) on a reference row
path_cell() {
	local i=$1
	if [[ ${R_REF[i]} -eq $((i + 1)) ]]; then printf '%s (*)' "${R_PATH[i]}"; else printf '%s' "${R_PATH[i]}"; fi
}

mgre_rev=$(git -C "$REPO_ROOT" describe --always --dirty 2>/dev/null || echo unknown)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
{
	echo "## mgre benchmark: TCP throughput, CPU cost, small-packet rate"
	echo
	echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs${cpu:+ ($cpu)};" \
		"background load before the run: $IDLE_LOAD CPUs busy"
	echo "- $(iperf3 --version | head -n 1); each measurement $T s (TCP: median of $REPEAT run(s)); TCP clients and UDP senders on the (first) spoke"
	echo "- mgre $mgre_rev: key=$KEY checksum=$CHECKSUM sequence=$SEQUENCE, underlay MTU 1500"
	echo "- Gbit/s: iperf3 receiver. CPU s/GB: busy time of all CPUs (user+nice+system+irq+softirq+steal," \
		"/proc/stat) during the iperf3 run / GB (1e9 bytes) received — lower is better"
	echo "- vs VXLAN: value / value of the kernel VXLAN row (*) of the same underlay" \
		"(for CPU s/GB above 1.00x means costlier than VXLAN)"

	echo
	echo "### A. one veth pair: spoke 192.0.2.11 -> hub 192.0.2.1 (TCP)"
	echo
	hdr="| # | path | 1 flow Gbit/s | vs VXLAN | 1 flow CPU s/GB | vs VXLAN "
	sep="|--:|------|------:|------:|------:|------:"
	if [[ $SKIP_MULTI != 1 ]]; then
		hdr+="| $FLOWS flows Gbit/s | vs VXLAN | $FLOWS flows CPU s/GB | vs VXLAN "
		sep+="|------:|------:|------:|------:"
		hdr+="| TCP retr (1 / $FLOWS flows) |"
	else
		hdr+="| TCP retr |"
	fi
	sep+="|------:|"
	echo "$hdr"
	echo "$sep"
	for ((i = A_FIRST - 1; i < A_LAST; i++)); do
		line="| $((i + 1)) | $(path_cell "$i") $(with_ref R_G1 "$i")$(with_ref R_C1 "$i")"
		retr=$(cell "${R_T1[i]}")
		if [[ $SKIP_MULTI != 1 ]]; then
			line+="$(with_ref R_GN "$i")$(with_ref R_CN "$i")"
			retr+=" / $(cell "${R_TN[i]}")"
		fi
		echo "$line| $retr |"
	done

	if [[ $SKIP_SMALL != 1 ]]; then
		echo
		echo "### A. small packets: $SMALL_SIZE-byte UDP payload, mgre-blast (sendmmsg/recvmmsg, batches of 64)" \
			"$([[ $SMALL_PPS == 0 ]] && echo unpaced || echo "paced to $SMALL_PPS/s"), 1 flow"
		echo
		echo "| # | path | sent kpps | received kpps | vs VXLAN | received / sent |"
		echo "|--:|------|------:|------:|------:|------:|"
		for ((i = A_FIRST - 1; i < A_LAST; i++)); do
			dlv=$(cell "${R_DLV[i]}")
			if [[ $dlv != - ]]; then dlv+=" %"; fi
			echo "| $((i + 1)) | $(path_cell "$i") | $(cell "${R_TX[i]}") $(with_ref R_RX "$i")| $dlv |"
		done
	fi

	if [[ -n ${PLUGIN_ROW:-} ]]; then
		off=$((PLUGIN_ROW - 2)) on=$((PLUGIN_ROW - 1))
		echo
		printf 'Plugins on / off (row %s / row %s): 1 flow %s' "$PLUGIN_ROW" "$((PLUGIN_ROW - 1))" \
			"$(ratio "${R_G1[on]}" "${R_G1[off]}")"
		if [[ $SKIP_MULTI != 1 ]]; then printf ', %s flows %s' "$FLOWS" "$(ratio "${R_GN[on]}" "${R_GN[off]}")"; fi
		if [[ $SKIP_SMALL != 1 ]]; then printf ', small packets received %s' "$(ratio "${R_RX[on]}" "${R_RX[off]}")"; fi
		printf '; CPU s/GB 1 flow %s' "$(ratio "${R_C1[on]}" "${R_C1[off]}")"
		if [[ $SKIP_MULTI != 1 ]]; then printf ', %s flows %s' "$FLOWS" "$(ratio "${R_CN[on]}" "${R_CN[off]}")"; fi
		echo
	fi

	if [[ $SKIP_BRIDGE != 1 ]]; then
		echo
		echo "### B. bridge: spoke1 192.0.2.11 -> spoke2 192.0.2.12, tunnels through the hub 192.0.2.1 (1 TCP flow)"
		echo
		echo "| # | path | Gbit/s | vs VXLAN | CPU s/GB | vs VXLAN | TCP retr |"
		echo "|--:|------|------:|------:|------:|------:|------:|"
		for ((i = B_FIRST - 1; i < ${#R_PATH[@]}; i++)); do
			echo "| $((i + 1)) | $(path_cell "$i") $(with_ref R_G1 "$i")$(with_ref R_C1 "$i")| $(cell "${R_T1[i]}") |"
		done
	fi

	notes=0
	for i in "${!R_PATH[@]}"; do
		[[ -n ${R_NOTE[i]} ]] || continue
		if ((!notes)); then
			echo
			echo "Notes:"
			echo
			notes=1
		fi
		echo "- row $((i + 1)): ${R_NOTE[i]}"
	done

	echo
	echo "Commands (namespaces mgb$$-*):"
	echo
	echo '```'
	for i in "${!R_PATH[@]}"; do
		if [[ -n ${R_CMD[i]} ]]; then
			while IFS= read -r line; do echo "$((i + 1)): $line"; done <<<"${R_CMD[i]}"
		fi
	done
	echo "$VX setup: ip link add vx42 type vxlan id 42 dstport 4789 local <self> remote <peer> dev eth0" \
		"(hub in B: no remote, bridge fdb append 00:00:00:00:00:00 dev vx42 dst <spoke> per spoke)"
	echo '```'
	if [[ -z $MGRE_UNAVAILABLE && $SKIP_MGRE != 1 ]]; then
		if [[ $SKIP_BRIDGE != 1 ]]; then
			cfgs=(b-hub-gre b-spoke1-gre) what="B / gre (A: hub + one spoke)"
		else
			cfgs=(a-hub-gre a-spoke-gre) what="A / gre"
		fi
		echo
		# shellcheck disable=SC2016 # Markdown backquotes, nothing to expand
		echo "Generated mgre configs, $what"'; gre-udp rows: `encap = "gre-udp"`; plugin row: plus the `[plugins]` of examples/lib/common.sh:'
		for f in "${cfgs[@]}"; do
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
	echo "Run: BENCH_SECONDS=$T BENCH_REPEAT=$REPEAT BENCH_FLOWS=$FLOWS BENCH_SMALL_SIZE=$SMALL_SIZE BENCH_SMALL_PPS=$SMALL_PPS" \
		"BENCH_SKIP_MULTI=$SKIP_MULTI BENCH_SKIP_SMALL=$SKIP_SMALL BENCH_SKIP_BRIDGE=$SKIP_BRIDGE" \
		"SKIP_MGRE=$SKIP_MGRE BENCH_KEY=$KEY BENCH_CHECKSUM=$CHECKSUM BENCH_SEQUENCE=$SEQUENCE" \
		"${MGRE_BIN:+MGRE_BIN=$MGRE_BIN }${BLAST_BIN:+BLAST_BIN=$BLAST_BIN }$0"
}

if ((ANY_FAIL)); then exit 1; fi
exit 0
