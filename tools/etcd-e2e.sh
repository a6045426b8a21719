#!/usr/bin/env bash
# Runs etcd 3.4.23's own end-to-end suite (tests/e2e) against cairn, or against Debian's etcd as
# the reference.
#
# The suite starts `<bin-dir>/etcd` with etcd's flags, waits for etcd's log lines, and drives the
# server with `<bin-dir>/etcdctl` and curl. This script builds the suite's test binary from the
# sources Debian ships in golang-etcd-server-dev, makes a bin dir whose `etcd` is the server under
# test and whose `etcdctl` is Debian's real etcdctl 3.4.23, then runs every v3 test in a process
# of its own, one at a time (the suite uses fixed ports), each with a timeout.
#
# Usage:
#   tools/etcd-e2e.sh                  build cairn (cargo build --release --bin cairn) and run
#   tools/etcd-e2e.sh --cairn PATH     run against this cairn binary
#   tools/etcd-e2e.sh --etcd           run against Debian's etcd (/usr/bin/etcd)
#   options:
#     --run REGEX       only the selected tests whose name matches REGEX (grep -E)
#     --list            print the selected tests and exit
#     --timeout SECS    per-test timeout (default 120)
#     --results DIR     where verdicts and logs go (default target/etcd-e2e/results-cairn or -etcd)
#     --expected FILE   expected failures (default tests/etcd-e2e-expected-failures.txt for cairn,
#                       none for --etcd: there every test must pass)
#
# Output: one line per test, `PASS name seconds` or `FAIL name seconds` (also in
# RESULTS/verdicts.txt), the log of every failing test in RESULTS/logs/NAME.log, then
# `e2e: N passed, M failed of T`. Exits 1 when a test fails that the expected-failures file does
# not list; tests that the file lists but that now pass are reported so the list can shrink.
#
# Expected-failures file: one test name per line, then ` # reason`. Blank lines and lines that
# start with `#` are ignored.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- options ------------------------------------------------------------------------------------
target=cairn          # cairn or etcd
cairn_bin=""          # empty: build it
run_regex=""
list_only=0
timeout_s=120
results=""
expected=""
expected_set=0

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
  case "$1" in
    --cairn) cairn_bin=${2:?--cairn needs a path}; target=cairn; shift 2 ;;
    --etcd) target=etcd; shift ;;
    --run) run_regex=${2:?--run needs a regex}; shift 2 ;;
    --list) list_only=1; shift ;;
    --timeout) timeout_s=${2:?--timeout needs seconds}; shift 2 ;;
    --results) results=${2:?--results needs a dir}; shift 2 ;;
    --expected) expected=${2:?--expected needs a file}; expected_set=1; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "etcd-e2e: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ $timeout_s =~ ^[0-9]+$ ]] || ((timeout_s == 0)); then
  echo "etcd-e2e: --timeout wants a positive number of seconds" >&2
  exit 2
fi

etcd_src=/usr/share/gocode/src/go.etcd.io/etcd
cache="$repo/target/etcd-e2e"
mkdir -p "$cache"

# --- system packages ----------------------------------------------------------------------------
# The suite's sources (and all their Go dependencies), the Go toolchain, the real etcdctl, and
# the reference etcd all come from Debian.
need_pkgs=0
[[ -d $etcd_src/tests/e2e ]] || need_pkgs=1
command -v go >/dev/null || need_pkgs=1
[[ -x /usr/bin/etcdctl ]] || need_pkgs=1
[[ -x /usr/bin/etcd ]] || need_pkgs=1
command -v curl >/dev/null || need_pkgs=1
if ((need_pkgs)); then
  sudo=""
  if (($(id -u) != 0)); then sudo=sudo; fi
  echo "etcd-e2e: installing golang-etcd-server-dev golang-go etcd-client etcd-server curl" >&2
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
    golang-etcd-server-dev golang-go etcd-client etcd-server curl >&2
fi

# --- the suite's test binary --------------------------------------------------------------------
# GOPATH mode over Debian's read-only tree: no modules, no proxy, no vendor dir. Only the build
# cache has to be writable, and it lives under target/. The binary is named after the package
# version, so an upgrade of golang-etcd-server-dev rebuilds it; otherwise it is reused.
src_version=$(dpkg-query -W -f='${Version}' golang-etcd-server-dev 2>/dev/null || echo unknown)
test_bin="$cache/e2e-${src_version//[^A-Za-z0-9.+-]/_}.test"
if [[ ! -x $test_bin ]]; then
  echo "etcd-e2e: building $test_bin (about a minute)" >&2
  (cd "$cache" &&
    GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS='' \
      GOCACHE="$cache/gocache" go test -c go.etcd.io/etcd/tests/e2e -o "$test_bin.tmp")
  mv "$test_bin.tmp" "$test_bin"
fi

# --- selection ----------------------------------------------------------------------------------
# Every v3 test: etcdctl v3 (less the v2-to-v3 migration), curl against the v3 gateway, metrics,
# the gateway and grpc-proxy subcommands, the server's own flag checks, and issue 6361 (snapshot
# restore). The v2 tests and the release-upgrade tests (which need an older etcd) are left out.
select_re='^(TestCtlV3|TestV3Curl|TestV3Metrics|TestGateway|TestGrpcproxy|TestEtcd|TestIssue6361)'
mapfile -t tests < <("$test_bin" -test.list '.*' | grep -E "$select_re" | grep -v Migrate |
  { if [[ -n $run_regex ]]; then grep -E -- "$run_regex" || true; else cat; fi; })
if ((list_only)); then
  printf '%s\n' "${tests[@]}"
  exit 0
fi
if ((${#tests[@]} == 0)); then
  echo "etcd-e2e: no test matches" >&2
  exit 2
fi

# --- the server under test ----------------------------------------------------------------------
if [[ $target == etcd ]]; then
  server=/usr/bin/etcd
else
  if [[ -z $cairn_bin ]]; then
    echo "etcd-e2e: cargo build --release --bin cairn" >&2
    (cd "$repo" && cargo build --release --bin cairn)
    cairn_bin="$repo/target/release/cairn"
  fi
  [[ -x $cairn_bin ]] || { echo "etcd-e2e: no executable at $cairn_bin" >&2; exit 2; }
  server=$(cd "$(dirname "$cairn_bin")" && pwd)/$(basename "$cairn_bin")
fi
# The bin dir's `etcd` is a small wrapper that runs the server in its own process (exec) after
# noting its arguments, and copies its output (which still reaches the suite) to a file of its
# own per start: without that, a failing test's log only says the server's pty closed. The same
# wrapper serves --etcd, so the reference run shows it changes nothing the suite relies on.
# The server leads the session of its pty, so when it exits the kernel hangs up the pty and
# sends SIGHUP to the copying tee: the tee is started ignoring it (the server is not), or a server
# that dies at once on a bad flag would leave no trace of why.
bin_dir="$cache/bin-$target"
mkdir -p "$bin_dir"
rm -f "$bin_dir/etcd"
server_q=$(printf '%q' "$server")
cat >"$bin_dir/etcd" <<WRAPPER
#!/usr/bin/env bash
# Made by tools/etcd-e2e.sh: the etcd that the e2e suite starts.
if [[ -n \${CAIRN_ETCD_E2E_SERVER_LOGS:-} ]]; then
  log="\$CAIRN_ETCD_E2E_SERVER_LOGS/\$(date +%s%N)-\$\$.log"
  printf '%q ' "\$0" "\$@" >"\$log"
  echo >>"\$log"
  trap '' HUP
  exec 3> >(exec tee -a "\$log")
  trap - HUP
  exec $server_q "\$@" >&3 2>&3 3>&-
fi
exec $server_q "\$@"
WRAPPER
chmod +x "$bin_dir/etcd"
ln -sfn /usr/bin/etcdctl "$bin_dir/etcdctl"

# --- results and the tests' working tree --------------------------------------------------------
# The suite reads a few files relative to its working directory (../../integration/fixtures for
# the JWT keys, ../../etcd.conf.yml.sample) and writes snapshot files into it, so each run gets a
# fresh copy of that layout: tree/tests/e2e is the working directory, tree/integration/fixtures
# is Debian's fixtures dir. Temporary data dirs go to RESULTS/tmp, not /tmp.
results=${results:-"$cache/results-$target"}
rm -rf "$results"
mkdir -p "$results/logs" "$results/tmp" "$results/tree/tests/e2e" "$results/tree/integration"
results=$(cd "$results" && pwd)
ln -s "$etcd_src/integration/fixtures" "$results/tree/integration/fixtures"
# Debian does not ship etcd's sample config file, which TestEtcdExampleConfig starts the server
# with; this one has the same effect: one member named default on localhost:2379 and :2380.
cat >"$results/tree/etcd.conf.yml.sample" <<EOF
name: 'default'
data-dir: '$results/tmp/example-config.etcd'
listen-peer-urls: 'http://localhost:2380'
listen-client-urls: 'http://localhost:2379'
initial-advertise-peer-urls: 'http://localhost:2380'
advertise-client-urls: 'http://localhost:2379'
initial-cluster: 'default=http://localhost:2380'
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
EOF
workdir="$results/tree/tests/e2e"
verdicts="$results/verdicts.txt"
: >"$verdicts"

# The suite listens on fixed ports: 20000 and up, and 2379/2380 for the example config. Anything
# already there makes tests fail for reasons of their own, so say so up front.
if command -v ss >/dev/null; then
  busy=$(ss -Hltn 2>/dev/null | awk '{print $4}' | grep -E ':(2379|2380|200[0-9][0-9])$' | xargs || true)
  if [[ -n $busy ]]; then
    echo "etcd-e2e: warning: ports the suite uses are taken: $busy" >&2
  fi
fi

# --- expected failures --------------------------------------------------------------------------
declare -A expected_fail=()
if ((!expected_set)) && [[ $target == cairn ]]; then
  expected="$repo/tests/etcd-e2e-expected-failures.txt"
fi
if [[ -n $expected ]]; then
  if [[ -f $expected ]]; then
    while IFS= read -r line; do
      name=${line%%#*}
      name=${name//[[:space:]]/}
      [[ -n $name ]] && expected_fail[$name]=1
    done <"$expected"
  elif ((expected_set)); then
    echo "etcd-e2e: no expected-failures file $expected" >&2
    exit 2
  fi
fi

# --- stray processes ----------------------------------------------------------------------------
# Every process a test starts (servers through a pty in their own session, etcdctl, curl) carries
# this tag in its environment. When the test binary dies on its timeout its servers may live on
# and hold the fixed ports, so after each test the tagged processes still running are killed, by
# pid. Nothing without the tag is touched.
tag="CAIRN_ETCD_E2E_RUN=$$-$(date +%s%N)"
tagged_pids() {
  grep -lzxF -- "$tag" /proc/[0-9]*/environ 2>/dev/null | sed 's#^/proc/\([0-9]*\)/environ$#\1#' || true
}
kill_strays() {
  local pids left
  mapfile -t pids < <(tagged_pids)
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  sleep 1
  mapfile -t left < <(tagged_pids)
  if ((${#left[@]})); then kill -KILL "${left[@]}" 2>/dev/null || true; fi
  echo "killed stray processes: ${pids[*]}"
}
trap 'kill_strays >/dev/null' EXIT
trap 'exit 130' INT TERM

# --- run ----------------------------------------------------------------------------------------
echo "etcd-e2e: ${#tests[@]} tests against $target ($server), timeout ${timeout_s}s each" >&2
passed=0
failed=0
unexpected=()
fixed=()
for name in "${tests[@]}"; do
  log="$results/logs/$name.log"
  server_logs="$results/tmp/server-logs"
  mkdir -p "$server_logs"
  start=$(date +%s.%N)
  # -test.timeout makes the binary fail and dump its goroutines; the outer timeout is the backstop
  # for a binary that cannot even do that.
  if (cd "$workdir" && env "$tag" TMPDIR="$results/tmp" CAIRN_ETCD_E2E_SERVER_LOGS="$server_logs" \
    timeout -k 10 $((timeout_s + 30)) "$test_bin" -test.run "^${name}\$" -test.v \
    -test.timeout "${timeout_s}s" -bin-dir "$bin_dir" -cert-dir "$etcd_src/integration/fixtures") \
    >"$log" 2>&1; then
    verdict=PASS
  else
    verdict=FAIL
  fi
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  kill_strays >>"$log"
  # Each server start's arguments and output, in start order, after the test's own output.
  for f in "$server_logs"/*.log; do
    [[ -e $f ]] || continue
    printf '\n--- server %s\n' "$(basename "$f" .log)" >>"$log"
    cat "$f" >>"$log"
  done
  rm -rf "${results:?}/tmp/"* "$workdir"/*.snapshot
  echo "$verdict $name $secs" | tee -a "$verdicts"
  if [[ $verdict == PASS ]]; then
    passed=$((passed + 1))
    rm -f "$log"
    [[ -n ${expected_fail[$name]:-} ]] && fixed+=("$name")
  else
    failed=$((failed + 1))
    [[ -z ${expected_fail[$name]:-} ]] && unexpected+=("$name")
  fi
done

# --- summary ------------------------------------------------------------------------------------
if ((${#fixed[@]})); then
  echo "etcd-e2e: listed in ${expected#"$repo/"} but passing now (remove them):"
  printf '  %s\n' "${fixed[@]}"
fi
if ((failed > ${#unexpected[@]})); then
  echo "etcd-e2e: $((failed - ${#unexpected[@]})) of the failures are expected (${expected#"$repo/"})"
fi
if ((${#unexpected[@]})); then
  echo "etcd-e2e: failing and not expected to (logs in $results/logs):"
  printf '  %s\n' "${unexpected[@]}"
fi
echo "e2e: $passed passed, $failed failed of ${#tests[@]}"
((${#unexpected[@]} == 0))
