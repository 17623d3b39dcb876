# shellcheck shell=bash
# examples/lib/common.sh: helpers shared by examples/demo.sh and examples/bench.sh.
#
# This file is SOURCED, NOT RUN (no shebang, not executable). A script loads it,
# after `set -euo pipefail`, with
#
#   LOG_TAG=demo   # prefix of the log lines: "[demo] ..."
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# Sourcing only defines variables and functions: it starts no process, creates
# no namespace and installs no trap (install_cleanup_traps does that).
#
# Provides
#   paths       SCRIPT_DIR (examples/), REPO_ROOT (the checkout)
#   settings    CARGO_TIMEOUT (environment, default 1800): bound of each cargo build, seconds
#   state       PIDS        assoc. array pid -> label: processes the script started
#                           and has not reaped yet (stopped by cleanup)
#               CREATED_NS  namespaces the script created (deleted by cleanup)
#               TMP         the script's temp dir (make_tmp), MGRE (the mgre binary)
#               STOP_RC     exit status of the last stop_pid
#               SPAWNED_PID pid of the last spawn_tracked
#   logging     log MSG..., die MSG... (log "ERROR: ..." and exit 1); both to stderr
#   processes   our_child PID, is_zombie PID, stop_pid PID [GRACE],
#               run_tracked OUTFILE CMD..., spawn_tracked LABEL CMD...
#   exit        install_cleanup_traps KEEP-VAR WHAT: on EXIT, INT (exit 130) and
#               TERM (exit 143) stop every tracked process, delete the created
#               namespaces and remove $TMP (kept on exit status 1 or KEEP-VAR=1)
#   namespaces  nsx NS CMD..., nssysctl NS KEY VALUE, new_ns NS, del_ns NS
#   setup       require_root, install_missing CMD:PACKAGE..., make_tmp NAME
#   mgre        build_mgre require|optional, use_built_mgre, build_plugins,
#               cargo_release require|optional CARGO-BUILD-ARGS..., release_bin NAME,
#               add_example_plugins CONFIG DIR,
#               wait_mgre_ready LABEL PID SOCKET LOGFILE NOT-READY-TEXT
#   iperf3      start_iperf_server NS DST SECONDS, iperf_parse OUTPUT
#
# Safety: only processes in PIDS, and only while they are direct children of
# this shell, are ever signalled; only namespaces in CREATED_NS are deleted.

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)

CREATED_NS=()       # namespaces this run created, deleted at exit
declare -gA PIDS=() # pid -> label: processes this run started and has not reaped yet
TMP=""
MGRE=""
CARGO_TIMEOUT=${CARGO_TIMEOUT:-1800} # seconds any one cargo build may take
STOP_RC=0
SPAWNED_PID=""

#--------------------------------------------------------------------------
# logging
#--------------------------------------------------------------------------
log() { printf '[%s] %s\n' "${LOG_TAG:-mgre}" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

#--------------------------------------------------------------------------
# processes
#--------------------------------------------------------------------------
# True if $1 is a live, direct child of this shell (never signal anything else).
our_child() {
	local pid=$1 stat rest ppid
	[[ -r /proc/$pid/stat ]] || return 1
	stat=$(<"/proc/$pid/stat") || return 1
	rest=${stat##*) } # skip "pid (comm) "
	read -r _ ppid _ <<<"$rest"
	[[ $ppid == "$$" ]]
}

is_zombie() { [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

# stop_pid PID [grace-seconds]: SIGTERM, wait, SIGKILL; sets STOP_RC to the exit status.
stop_pid() {
	local pid=$1 grace=${2:-5} i
	STOP_RC=0
	if our_child "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			# a reaped-by-bash or zombie child no longer counts as running
			if ! our_child "$pid" || is_zombie "$pid"; then break; fi
			sleep 0.1
		done
		if our_child "$pid" && ! is_zombie "$pid"; then
			log "pid $pid (${PIDS[$pid]:-?}) ignored SIGTERM, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	# shellcheck disable=SC2034 # STOP_RC is read by the sourcing script
	wait "$pid" 2>/dev/null || STOP_RC=$?
	unset "PIDS[$pid]"
}

# run_tracked OUTFILE CMD...: run CMD in the background (so that a signal to
# this script interrupts the wait at once and cleanup can kill CMD by PID),
# output to OUTFILE; returns CMD's exit status.
run_tracked() {
	local out=$1 pid rc=0
	shift
	"$@" >"$out" 2>&1 &
	pid=$!
	PIDS[$pid]="$*"
	wait "$pid" || rc=$?
	unset "PIDS[$pid]"
	return "$rc"
}

# spawn_tracked LABEL CMD...: start CMD in the background, tracked in PIDS as
# LABEL (stop it with stop_pid); sets SPAWNED_PID. CMD inherits the call's
# redirections: `spawn_tracked x cmd >"$log" 2>&1`.
spawn_tracked() {
	local label=$1
	shift
	"$@" &
	SPAWNED_PID=$!
	PIDS[$SPAWNED_PID]=$label
}

#--------------------------------------------------------------------------
# exit: cleanup on every path
#--------------------------------------------------------------------------
CLEANUP_KEEP_VAR=""     # name of the env variable that keeps $TMP when 1
CLEANUP_KEPT_WHAT="tmp" # "<what> kept in $TMP"

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$? pid i keep=0
	trap - EXIT INT TERM
	set +e
	for pid in "${!PIDS[@]}"; do
		if our_child "$pid"; then kill -TERM "$pid" 2>/dev/null; fi
	done
	for pid in "${!PIDS[@]}"; do stop_pid "$pid" 3; done
	for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do
		ip netns delete "${CREATED_NS[i]}" 2>/dev/null
	done
	if [[ -n $CLEANUP_KEEP_VAR ]]; then keep=${!CLEANUP_KEEP_VAR:-0}; fi
	if [[ -n $TMP && -d $TMP ]]; then
		if [[ $rc -eq 1 || $keep == 1 ]]; then
			log "$CLEANUP_KEPT_WHAT kept in $TMP"
		else
			rm -rf -- "$TMP"
		fi
	fi
	exit "$rc"
}

# install_cleanup_traps KEEP-VAR WHAT: run cleanup on exit, Ctrl-C and SIGTERM.
# $TMP is kept (and "WHAT kept in $TMP" logged) on exit status 1 or when the
# environment variable named KEEP-VAR is 1.
install_cleanup_traps() {
	CLEANUP_KEEP_VAR=$1
	CLEANUP_KEPT_WHAT=$2
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

#--------------------------------------------------------------------------
# namespaces
#--------------------------------------------------------------------------
nsx() { # nsx NS cmd...: run a command in a namespace
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# nssysctl NS key value (writes /proc/sys directly: no dependency on procps)
nssysctl() {
	local path="/proc/sys/${2//.//}"
	# shellcheck disable=SC2016 # expanded by the inner sh
	nsx "$1" sh -c 'echo "$1" > "$2"' sh "$3" "$path"
}

# new_ns NS: create NS (recorded for cleanup), lo up, no IPv6 DAD
new_ns() {
	local ns=$1
	ip netns add "$ns"
	CREATED_NS+=("$ns")
	ip -n "$ns" link set lo up
	# no IPv6 duplicate address detection: addresses are usable immediately
	nssysctl "$ns" net.ipv6.conf.all.accept_dad 0
	nssysctl "$ns" net.ipv6.conf.default.accept_dad 0
}

# del_ns NS: delete a namespace created by new_ns before exit
del_ns() {
	local ns=$1 i
	ip netns delete "$ns"
	for i in "${!CREATED_NS[@]}"; do
		if [[ ${CREATED_NS[i]} == "$ns" ]]; then unset "CREATED_NS[i]"; fi
	done
	CREATED_NS=("${CREATED_NS[@]}")
}

#--------------------------------------------------------------------------
# setup
#--------------------------------------------------------------------------
require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (network namespaces, TUN)"
}

# install_missing CMD:PACKAGE...: apt-get install the PACKAGE of every missing CMD
install_missing() {
	local pkgs=() spec
	for spec in "$@"; do
		command -v "${spec%%:*}" >/dev/null 2>&1 || pkgs+=("${spec#*:}")
	done
	if ((${#pkgs[@]})); then
		command -v apt-get >/dev/null 2>&1 || die "missing ${pkgs[*]} and no apt-get to install them"
		log "installing: ${pkgs[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update
		apt-get install -y "${pkgs[@]}"
	fi
}

# make_tmp NAME: TMP = a new private dir /tmp/mgre-NAME.<pid>.XXXXXX
make_tmp() {
	TMP=$(mktemp -d "/tmp/mgre-$1.$$.XXXXXX")
	chmod 700 "$TMP"
}

#--------------------------------------------------------------------------
# mgre
#--------------------------------------------------------------------------
# build_mgre require|optional: cargo build --release -p mgre (see cargo_release)
build_mgre() {
	cargo_release "$1" -p mgre
}

# cargo_release require|optional ARGS...: cargo build --release ARGS... in
# REPO_ROOT, as the owner of the checkout when that is not root (keeps target/
# theirs), bounded by CARGO_TIMEOUT seconds (timeout --foreground, so Ctrl-C
# still reaches cargo); cargo's output goes to stderr. No cargo found: "require"
# dies with a hint, "optional" returns 1. A failed build returns cargo's status
# (124: timed out).
cargo_release() {
	local mode=$1 owner home cargo
	shift
	owner=$(stat -c %U "$REPO_ROOT")
	log "building: cargo build --release $* (in $REPO_ROOT)"
	if [[ $owner != root ]] && command -v runuser >/dev/null 2>&1; then
		home=$(getent passwd "$owner" | cut -d: -f6)
		(cd "$REPO_ROOT" && runuser -u "$owner" -- timeout --foreground "$CARGO_TIMEOUT" env HOME="$home" \
			PATH="$home/.cargo/bin:$PATH" cargo build --release "$@") >&2
	else
		cargo=$(command -v cargo || true)
		[[ -n $cargo ]] || cargo="${HOME:-/root}/.cargo/bin/cargo"
		if [[ ! -x $cargo ]]; then
			[[ $mode != require ]] || die "cargo not found (install Rust: https://rustup.rs), or set MGRE_BIN"
			return 1
		fi
		(cd "$REPO_ROOT" && timeout --foreground "$CARGO_TIMEOUT" "$cargo" build --release "$@") >&2
	fi
}

# build_plugins: builds the example plugins for wasm32-unknown-unknown into
# $REPO_ROOT/target/plugins (no debug info) and sets PLUGIN_WASM_DIR; returns 1 on failure.
build_plugins() {
	local cargo
	cargo=$(command -v cargo || true)
	[[ -n $cargo ]] || cargo="${HOME:-/root}/.cargo/bin/cargo"
	[[ -x $cargo ]] || return 1
	log "building plugins: cargo build --release --target wasm32-unknown-unknown -p dscp-classifier -p voip-qos -p spoke-policy"
	(cd "$REPO_ROOT" && CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
		timeout --foreground "$CARGO_TIMEOUT" "$cargo" build --release --target wasm32-unknown-unknown --target-dir target/plugins \
		-p dscp-classifier -p voip-qos -p spoke-policy) >&2 || return 1
	PLUGIN_WASM_DIR="$REPO_ROOT/target/plugins/wasm32-unknown-unknown/release"
}

# add_example_plugins CONFIG DIR: copies the three example plugins into DIR and appends a
# [plugins] section loading all three (classify, mark, route on every packet's path) to CONFIG.
add_example_plugins() {
	local cfg=$1 dir=$2
	mkdir -p "$dir"
	cp "$PLUGIN_WASM_DIR"/{dscp_classifier,voip_qos,spoke_policy}.wasm "$dir/"
	cat >>"$cfg" <<-EOT

		[plugins]
		dir = "$dir"
		watch = false

		[[plugin]]
		name = "dscp-classifier"
		file = "dscp_classifier.wasm"
		[plugin.config]
		classes = ["voice", "signalling", "best-effort"]
		default-class = "best-effort"
		[[plugin.config.rule]]
		class = "voice"
		dscp = "ef"
		[[plugin.config.rule]]
		class = "signalling"
		protocol = ["udp", "tcp"]
		port = [5060, 5061]

		[[plugin]]
		name = "voip-qos"
		file = "voip_qos.wasm"

		[[plugin]]
		name = "spoke-policy"
		file = "spoke_policy.wasm"
		[plugin.config]
		default = "allow"
		blackhole = ["203.0.113.60/30"]
	EOT
}

# use_built_mgre: MGRE = the binary build_mgre produced
use_built_mgre() {
	MGRE=$(release_bin mgre)
}

# release_bin NAME: prints the path of the binary NAME that cargo_release built
release_bin() {
	local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/$1"
	[[ $bin == /* ]] || bin="$REPO_ROOT/$bin"
	printf '%s\n' "$bin"
}

# wait_mgre_ready LABEL PID SOCKET LOGFILE NOT-READY-TEXT: poll
# `mgre show stats --socket SOCKET` until it answers while PID (the daemon)
# runs, for at most READY_TIMEOUT seconds. On failure logs why, with the tail
# of LOGFILE ("mgre LABEL<NOT-READY-TEXT> after ...s" on timeout); returns 1.
wait_mgre_ready() {
	local label=$1 pid=$2 sock=$3 logfile=$4 not_ready=$5 deadline=$((SECONDS + READY_TIMEOUT))
	while ((SECONDS < deadline)); do
		if timeout 3 "$MGRE" show stats --socket "$sock" >/dev/null 2>&1 &&
			our_child "$pid"; then
			return 0
		fi
		if ! our_child "$pid"; then
			log "mgre $label exited early; last log lines:"
			tail -n 20 "$logfile" >&2 || true
			return 1
		fi
		sleep 0.2
	done
	log "mgre $label$not_ready after ${READY_TIMEOUT}s; last log lines:"
	tail -n 20 "$logfile" >&2 || true
	return 1
}

#--------------------------------------------------------------------------
# iperf3
#--------------------------------------------------------------------------
# start_iperf_server NS DST SECONDS: a one-off `iperf3 -s -1 -B DST` in NS
# (bounded by timeout SECONDS+30), tracked as "iperf3 server", SPAWNED_PID set;
# returns once it listens on port 5201 (or after 5 s). Its output follows the
# call's redirections: `start_iperf_server ... >"$log" 2>&1`.
start_iperf_server() {
	local ns=$1 dst=$2 secs=$3 i
	spawn_tracked "iperf3 server" ip netns exec "$ns" timeout $((secs + 30)) iperf3 -s -1 -B "$dst"
	for ((i = 0; i < 50; i++)); do
		if [[ -n $(ip netns exec "$ns" ss -Hltn 'sport = :5201' 2>/dev/null) ]]; then break; fi
		sleep 0.1
	done
}

# iperf_parse OUTPUT (of iperf3 -c ... -f g): IPERF_GBPS = receiver Gbit/s,
# IPERF_RETR = the sender's retransmit field (both empty when not found)
# shellcheck disable=SC2034 # IPERF_GBPS, IPERF_RETR are read by the sourcing script
iperf_parse() {
	IPERF_GBPS=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") v = $(i - 1)} END {print v}' <<<"$1")
	IPERF_RETR=$(awk '/sender/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") v = $(i + 1)} END {print v}' <<<"$1")
}
