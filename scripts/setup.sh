#!/usr/bin/env bash
# One-command set-up for a Debian 12 machine (idempotent; fast when already done):
# Debian packages, a virtual environment that can import Debian's BCC, the Python deps.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DEB_PACKAGES=(
  bpfcc-tools python3-bpfcc linux-headers-amd64   # BCC and a header tree it can compile against
  iptables iproute2                                # the testbed's traffic capture and pods
  tcpdump                                          # packet captures: the wire truth of the accuracy tests
  wrk hey                                          # load generators people already use
  nghttp2-client                                   # h2load: HTTP/2 and gRPC load in the tests
  gcc                                              # the benchmarks' C loops (benchmarks/*.c)
  linux-perf                                       # perf: benchmarks.perf_probe (where the probe's BPF time goes)
  chromium fonts-dejavu-core                       # the HTML report's browser test
  prometheus                                       # the DaemonSet's metrics, scraped for real
  kubectl                                          # `kubectl kustomize daemonset/` (kustomize v5)
  openssl                                          # the testbed's mTLS certificates
  curl git                                         # tests: HTTP/2 prior knowledge to the testbed; the tree check
)

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages (${missing[*]}); run 'make setup' as root"; exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # Services installed here (prometheus) must not start on their own: tests start what they need.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  [ "$made_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# Debian's bcc module lives in dist-packages, not on PyPI (the PyPI "bcc" is another project).
# Expose that one package to the venv, nothing else of dist-packages.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$VENV/debian-bcc"
ln -sfn /usr/lib/python3/dist-packages/bcc "$VENV/debian-bcc/bcc"
echo "$(cd "$VENV/debian-bcc" && pwd)" >"$site/debian_bcc.pth"

stamp="$VENV/.smp-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing Python dependencies"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[dev,testbed]'
  touch "$stamp"
fi
"$VENV/bin/python" -c 'import bcc, envoy, profiler' || { log "venv is broken; remove $VENV and retry"; exit 1; }

# `smp-profiler` on the PATH, also under sudo (whose secure_path drops the venv): a link to
# this venv's script, which runs with the venv's Python wherever it is called from. Only a
# link (or nothing) is replaced, never a file someone else installed there; and a link to
# another checkout's live script is left as it is (several checkouts share a machine: the
# last `make setup` would silently take over the others' command) unless SMP_RELINK=1.
script="$(cd "$VENV/bin" && pwd)/smp-profiler"
link=/usr/local/bin/smp-profiler
current=$(readlink "$link" 2>/dev/null || true)
if [ "$current" = "$script" ]; then
  :
elif [ "$(id -u)" != 0 ]; then
  log "smp-profiler is $script (not linked from $link: run make setup as root)"
elif [ -e "$link" ] && [ ! -L "$link" ]; then
  log "smp-profiler is $script ($link is a file someone installed: left as it is)"
elif [ -L "$link" ] && [ -x "$link" ] && [ "${SMP_RELINK:-0}" != 1 ]; then
  log "$link -> $current (another checkout), left as it is: SMP_RELINK=1 make setup points it here"
else
  ln -sfn "$script" "$link"
  log "linked $link -> $script"
fi
log "ready ($VENV)"
