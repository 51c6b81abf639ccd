#!/usr/bin/env bash
# Builds the local test images orch-test/busybox:1 and orch-test/busybox:2 from Debian's
# busybox-static package, with no image registry (none is reachable from the test machines).
# The two images are identical but for /version ("1" or "2") and the label
# orch.test.version. Also orch-test/udp-echo:1: busybox and /bin/udp-echo (scripts/udp-echo.c,
# compiled static here), a UDP server for the routing mesh's tests (busybox's nc has no UDP).
# Idempotent: a tag that already exists is left alone.
set -euo pipefail

VERSIONS=(1 2)
REPO=orch-test/busybox

die() { printf 'build-test-images: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-test-images: %s\n' "$*" >&2; }

command -v docker >/dev/null 2>&1 || die "the docker command is not installed"
docker info >/dev/null 2>&1 || die "no Docker Engine answers (docker info failed)"

missing=()
for v in "${VERSIONS[@]}"; do
    docker image inspect "$REPO:$v" >/dev/null 2>&1 || missing+=("$v")
done
UDP_IMAGE=orch-test/udp-echo:1
udp_missing=0
docker image inspect "$UDP_IMAGE" >/dev/null 2>&1 || udp_missing=1
[ "${#missing[@]}" -eq 0 ] && [ "$udp_missing" -eq 0 ] && exit 0

# Several test binaries may run this at once: serialize the builds.
exec 9>/tmp/orch-build-test-images.lock
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

work="$(mktemp -d /tmp/orch-test-images.XXXXXX)"
trap 'rm -rf "$work"' EXIT

is_static() {
    local bin="$1"
    [ -x "$bin" ] || return 1
    local out=""
    if command -v file >/dev/null 2>&1; then
        out="$(file -L "$bin" 2>&1 || true)"
        [[ "$out" == *"statically linked"* || "$out" == *"static-pie linked"* ]] && return 0
    fi
    out="$(ldd "$bin" 2>&1 || true)"
    [[ "$out" == *"not a dynamic executable"* || "$out" == *"statically linked"* ]]
}

fetch_busybox() {
    if is_static /bin/busybox; then
        cp /bin/busybox "$work/busybox"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "/bin/busybox is missing or not static, and apt-get is not available"
    mkdir -p "$work/deb"
    if ! (cd "$work/deb" && apt-get download busybox-static >/dev/null 2>&1); then
        log "apt-get download failed; running apt-get update"
        apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
        (cd "$work/deb" && apt-get download busybox-static) || die "apt-get download busybox-static failed"
    fi
    local deb
    deb="$(find "$work/deb" -name 'busybox-static_*.deb' | head -n1)"
    [ -n "$deb" ] || die "apt-get download produced no busybox-static .deb"
    dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb could not extract $deb"
    local bin
    for bin in "$work/root/bin/busybox" "$work/root/usr/bin/busybox"; do
        if [ -f "$bin" ]; then
            cp "$bin" "$work/busybox"
            break
        fi
    done
    [ -f "$work/busybox" ] || die "no busybox binary in $deb"
    is_static "$work/busybox" || die "the busybox from $deb is not statically linked"
}

build() {
    local v="$1" ctx="$work/ctx-$1"
    mkdir -p "$ctx"
    cp "$work/busybox" "$ctx/busybox"
    chmod 0755 "$ctx/busybox"
    printf '%s\n' "$v" >"$ctx/version"
    cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin
COPY version /version
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/root", "/etc", "/usr/bin", "/sbin", "/usr/sbin"]
RUN ["/bin/busybox", "chmod", "1777", "/tmp"]
LABEL orch.test.version="$v"
CMD ["sleep", "3600"]
EOF
    log "building $REPO:$v"
    DOCKER_BUILDKIT=0 docker build -q -t "$REPO:$v" "$ctx" >/dev/null \
        || die "docker build of $REPO:$v failed"
}

build_udp_echo() {
    local ctx="$work/ctx-udp"
    mkdir -p "$ctx"
    command -v gcc >/dev/null 2>&1 || die "gcc is needed to build $UDP_IMAGE (apt-get install gcc libc6-dev)"
    gcc -O2 -static -o "$ctx/udp-echo" "$(dirname "$0")/udp-echo.c" \
        || die "gcc could not build udp-echo (is libc6-dev installed?)"
    cat >"$ctx/Dockerfile" <<EOF
FROM $REPO:1
COPY udp-echo /bin/udp-echo
CMD ["/bin/udp-echo", "53"]
EOF
    log "building $UDP_IMAGE"
    DOCKER_BUILDKIT=0 docker build -q -t "$UDP_IMAGE" "$ctx" >/dev/null \
        || die "docker build of $UDP_IMAGE failed"
}

if [ "${#missing[@]}" -gt 0 ]; then
    fetch_busybox
fi
for v in "${missing[@]}"; do
    # Another run may have built it while this one waited for the lock.
    docker image inspect "$REPO:$v" >/dev/null 2>&1 && continue
    build "$v"
done
docker image inspect "$UDP_IMAGE" >/dev/null 2>&1 || build_udp_echo

for v in "${VERSIONS[@]}"; do
    got="$(docker run --rm "$REPO:$v" cat /version)" || die "$REPO:$v does not run"
    [ "$got" = "$v" ] || die "$REPO:$v has /version '$got', want '$v'"
done
log "images ready: ${VERSIONS[*]/#/$REPO:}"
