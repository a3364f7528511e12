#!/usr/bin/env bash
# The sandbox Asterisk: Debian sid's asterisk in a debootstrap root, started with chroot.
#
#   sandbox.sh build     build (or rebuild) the cached root when provision.sh changed
#   sandbox.sh up        build if needed, install asterisk/etc, start Asterisk, wait for ARI
#   sandbox.sh down      stop Asterisk (by its pid file, never by name) and unmount
#   sandbox.sh status    exit 0 when ARI answers
#   sandbox.sh cli [CMD] Asterisk CLI (interactive, or run one command)
#   sandbox.sh install   copy asterisk/etc (and sounds) into the root (`up` does it)
#
# The root lives outside the repository: $PHONEMFA_SANDBOX (default /var/tmp/phonemfa-sandbox).
# With PHONEMFA_SANDBOX_DOCKER=1 and a Docker engine that answers (`docker info`), up/down/cli
# drive docker/compose.yaml instead; both paths run the same provision.sh and asterisk/etc.
# Opt-in: `make run` and the tests read the prompts and sounds in the chroot's root, which
# the containers keep in a volume of their own.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
SANDBOX=${PHONEMFA_SANDBOX:-/var/tmp/phonemfa-sandbox}
ROOT=$SANDBOX/root
STAMP=$SANDBOX/provision.sha256
MIRROR=${PHONEMFA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ARI_URL=${PHONEMFA_ARI_URL:-http://127.0.0.1:8088}
ARI_USER=${PHONEMFA_ARI_USER:-phonemfa}
ARI_PASSWORD=${PHONEMFA_ARI_PASSWORD:-phonemfa-sandbox-secret}
# var/run is an absolute symlink to /run inside the root: use the real path from outside.
PIDFILE=$ROOT/run/asterisk/asterisk.pid
COMPOSE=(docker compose -f "$REPO/docker/compose.yaml")

log() { printf 'sandbox: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

use_docker() {
    [ "${PHONEMFA_SANDBOX_DOCKER:-0}" = 1 ] && command -v docker >/dev/null 2>&1 \
        && timeout 5 docker info >/dev/null 2>&1
}

provision_hash() { sha256sum "$HERE/provision.sh" | cut -d' ' -f1; }

build() {
    local want
    want=$(provision_hash)
    if [ -x "$ROOT/usr/sbin/asterisk" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "building the sandbox needs root (debootstrap, chroot)"
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    if is_running; then stop; fi
    unmount_all
    log "building Debian sid root in $ROOT (about a minute) ..."
    local new=$SANDBOX/root.new
    rm -rf "$new"
    mkdir -p "$SANDBOX"
    debootstrap --variant=minbase sid "$new" "$MIRROR" >"$SANDBOX/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $SANDBOX/debootstrap.log"
    cp "$HERE/provision.sh" "$new/tmp/provision.sh"
    cp /etc/resolv.conf "$new/etc/resolv.conf" 2>/dev/null || true
    mount -t proc proc "$new/proc"
    local rc=0
    chroot "$new" /bin/sh /tmp/provision.sh >"$SANDBOX/provision.log" 2>&1 || rc=$?
    umount "$new/proc"
    [ $rc = 0 ] || die "provision.sh failed, see $SANDBOX/provision.log"
    rm -f "$new/tmp/provision.sh"
    rm -rf "$ROOT"
    mv "$new" "$ROOT"
    echo "$want" >"$STAMP"
    log "root ready ($(du -sh "$ROOT" | cut -f1))"
}

install_config() {
    local etc=$ROOT/etc/asterisk
    rm -rf "$etc"
    mkdir -p "$etc"
    cp "$HERE"/etc/*.conf "$etc/"
    # Shipped prompts (made by `make prompts` into asterisk/sounds) go under sounds/phonemfa.
    local sounds=$ROOT/usr/share/asterisk/sounds
    rm -rf "$sounds/phonemfa"
    mkdir -p "$sounds/phonemfa"
    cp -r "$HERE/sounds/." "$sounds/phonemfa/"
    mkdir -p "$ROOT/var/spool/asterisk/recording" "$ROOT/run/asterisk"
    chroot "$ROOT" chown -R asterisk:asterisk /etc/asterisk /var/spool/asterisk \
        /var/lib/asterisk /var/log/asterisk /var/run/asterisk /usr/share/asterisk/sounds
}

is_mounted() { grep -q " $1 " /proc/self/mounts; }

mount_all() {
    is_mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    is_mounted "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
}

unmount_all() {
    local m
    for m in "$ROOT/dev" "$ROOT/proc" "$SANDBOX/root.new/proc"; do
        if is_mounted "$m"; then umount "$m" || umount -l "$m"; fi
    done
}

asterisk_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # The pid must really be this root's asterisk, not a recycled number.
    [ "$(readlink "/proc/$pid/root")" = "$(readlink -f "$ROOT")" ] || return 1
    echo "$pid"
}

is_running() { asterisk_pid >/dev/null; }

ari_ready() {
    curl -fsS -m 2 -u "$ARI_USER:$ARI_PASSWORD" "$ARI_URL/ari/asterisk/info" >/dev/null 2>&1
}

wait_ari() {
    local i
    for i in $(seq 1 150); do
        if ari_ready; then log "ARI answers at $ARI_URL"; return 0; fi
        sleep 0.2
    done
    die "ARI did not answer at $ARI_URL within 30 s (see $ROOT/var/log/asterisk/messages)"
}

start() {
    build
    install_config
    if is_running; then
        log "Asterisk already running (pid $(asterisk_pid)); reloading configuration"
        chroot "$ROOT" /usr/sbin/asterisk -rx "core reload" >/dev/null || true
        wait_ari
        return 0
    fi
    mount_all
    rm -f "$PIDFILE" "$ROOT/run/asterisk/asterisk.ctl"
    # -F: daemonize even though -f is not given elsewhere; pid file tells us who to stop.
    # The daemon must not inherit our caller's descriptors (a lock file held by `flock`, a
    # test runner's pipes): it would hold them for its whole life.
    (
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] && eval "exec $fd>&-"
        done
        exec chroot "$ROOT" /usr/sbin/asterisk -U asterisk -G asterisk -F
    )
    wait_ari
}

stop() {
    local pid i
    if ! pid=$(asterisk_pid); then
        unmount_all
        return 0
    fi
    chroot "$ROOT" /usr/sbin/asterisk -rx "core stop now" >/dev/null 2>&1 || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "Asterisk (pid $pid) did not stop; sending SIGKILL to that pid"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$PIDFILE"
    unmount_all
    log "Asterisk stopped"
}

cmd=${1:-}
shift || true
case "$cmd" in
    build) build ;;
    install) install_config ;;
    up)
        if use_docker; then "${COMPOSE[@]}" up -d --build asterisk && wait_ari; else start; fi ;;
    down)
        if use_docker; then "${COMPOSE[@]}" down; else stop; fi ;;
    restart)
        if use_docker; then "${COMPOSE[@]}" restart asterisk && wait_ari; else stop; start; fi ;;
    status)
        if ari_ready; then log "ARI answers at $ARI_URL"; else log "ARI not answering at $ARI_URL"; exit 1; fi ;;
    cli)
        if use_docker; then
            if [ $# -gt 0 ]; then "${COMPOSE[@]}" exec -T asterisk asterisk -rx "$*"
            else "${COMPOSE[@]}" exec asterisk asterisk -rvvv; fi
        else
            is_running || die "Asterisk is not running (make asterisk-up)"
            if [ $# -gt 0 ]; then chroot "$ROOT" /usr/sbin/asterisk -rx "$*"
            else chroot "$ROOT" /usr/sbin/asterisk -rvvv; fi
        fi ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
