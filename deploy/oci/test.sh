#!/usr/bin/env bash
# What CI runs for the OCI image: builds it (deploy/oci/build.sh; P3AK_OCI_REUSE=1 reuses an
# image already built) and checks it with podman, exiting non-zero on the first failure:
#   1. `p3ak --version` and `p3ak sandbox status` (the full sandbox must be available);
#   2. a vault create / put / get round trip, the passphrase from a podman secret (a file
#      mounted at /run/secrets/p3ak_passphrase, never in the image or the environment);
#   3. `p3ak demo`: the kernel, real sandboxed plugin processes under their own uids, the
#      approval daemon, a loopback service; fails if the sandbox is degraded;
#   4. `p3ak up` as the image's default command on a fresh home volume: `p3ak status`,
#      `p3ak doctor`, the spool's modes and owners (docs/hitl.md), TCP listeners on loopback
#      only, and a clean stop on SIGTERM.
#
# How containers are run, and why (the same flags as compose.yaml):
#   --runtime runc        crun 1.8 fails here ("cgroups in hybrid mode not supported")
#   --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
#                         podman's default raises the limits above the caller's hard limit;
#                         without CAP_SYS_RESOURCE (as on this CI machine) setrlimit fails
#   --uidmap 0:$base:65536 --gidmap 0:$base:65536
#                         a user namespace: the container's root (which `p3ak up` must be, to
#                         give the approval daemon, the kernel and each plugin their own uid)
#                         is an unprivileged host uid; the ids P3AK uses (60990-61999) are
#                         inside the 65536 mapped
#   --cap-add SYS_ADMIN   the sandbox puts each plugin without network into a new network
#                         namespace (unshare(CLONE_NEWNET)), which needs CAP_SYS_ADMIN; podman
#                         drops it by default and plugins then fail to start. Inside the user
#                         namespace the capability only covers namespaces that user namespace
#                         owns, not the host.
#   --security-opt seccomp=deploy/seccomp/oci/kernel.json
#                         the container's profile, the one Kubernetes uses as its Localhost
#                         profile (docs/deploy.md): run here so that it is proven to carry the
#                         demo and `p3ak up`, not only valid JSON
#   --network=none        the demo and the tests are offline (the container gets a loopback)
set -euo pipefail
cd "$(dirname "$0")/../.."

image="${P3AK_OCI_IMAGE:-localhost/p3ak}:latest"
out="${P3AK_OCI_OUT:-$HOME/.cache/p3ak-oci}"
base="${P3AK_OCI_UID_BASE:-524288}"
tag="p3ak-oci-test-$$"
mkdir -p "$out"

t0=$SECONDS
step_start=$SECONDS
step() {
  printf 'oci-test: [%3ds] %s\n' "$((SECONDS - step_start))" "$*" >&2
  step_start=$SECONDS
}
fail() {
  printf 'oci-test: FAILED: %s\n' "$*" >&2
  exit 1
}

cleanup() {
  podman rm -f "$tag" >/dev/null 2>&1 || true
  podman volume rm -f "$tag-home" "$tag-data" >/dev/null 2>&1 || true
  podman secret rm "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
work=$(mktemp -d)
trap cleanup EXIT

# build.sh installs the tools when it runs; a reused image still needs podman, runc and
# catatonit (podman's --init, only a Recommends of podman).
if ! command -v podman >/dev/null || ! command -v runc >/dev/null ||
  [ ! -x /usr/libexec/podman/catatonit ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends podman runc catatonit
fi

if [ "${P3AK_OCI_REUSE:-0}" = 1 ] && podman image exists "$image"; then
  step "reusing $image"
else
  deploy/oci/build.sh > "$out/build.out"
  step "built $image (contents in $out/contents.txt)"
fi

run=(podman --runtime runc run --rm
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
  --uidmap "0:$base:65536" --gidmap "0:$base:65536"
  --cap-add SYS_ADMIN
  --security-opt "seccomp=$PWD/deploy/seccomp/oci/kernel.json"
  --network=none)

# 1. version and sandbox
version=$("${run[@]}" "$image" --version)
[[ $version == "p3ak "* ]] || fail "--version said: $version"
sandbox=$("${run[@]}" "$image" sandbox status)
printf '%s\n' "$sandbox" >&2
grep -q 'the full sandbox is available' <<<"$sandbox" || fail "the sandbox is not complete in the container"
step "$version; the full sandbox is available"

# 2. vault round trip, the passphrase from a secret file
umask 077
head -c 32 /dev/urandom | base64 > "$work/passphrase"
podman secret create "$tag" "$work/passphrase" >/dev/null
rm -f "$work/passphrase"
podman volume create "$tag-data" >/dev/null
podman volume create "$tag-home" >/dev/null
secret=(--secret "$tag,target=p3ak_passphrase")
pass=(--passphrase-file /run/secrets/p3ak_passphrase)
"${run[@]}" "${secret[@]}" -v "$tag-data:/data" "$image" vault create /data/round.vault "${pass[@]}" >&2
text="a note written inside the container $(date +%s)"
id=$(printf '%s\n' "$text" | "${run[@]}" -i "${secret[@]}" -v "$tag-data:/data" "$image" \
  vault put /data/round.vault - "${pass[@]}")
back=$("${run[@]}" "${secret[@]}" -v "$tag-data:/data" "$image" vault get /data/round.vault "$id" "${pass[@]}")
[ "$back" = "$text" ] || fail "vault get returned '$back', not '$text'"
"${run[@]}" "${secret[@]}" -v "$tag-data:/data" "$image" vault verify /data/round.vault "${pass[@]}" >&2
if "${run[@]}" -v "$tag-data:/data" -e P3AK_PASSPHRASE=wrong-passphrase "$image" \
  vault get /data/round.vault "$id" >/dev/null 2>&1; then
  fail "the vault opened with a wrong passphrase"
fi
step "vault create/put/get/verify round trip (id $id); a wrong passphrase is refused"

# 3. the demo
if ! "${run[@]}" "$image" demo > "$out/demo.out" 2>&1; then
  cat "$out/demo.out" >&2
  fail "p3ak demo failed in the container"
fi
if grep -qi 'sandbox degraded' "$out/demo.out"; then
  cat "$out/demo.out" >&2
  fail "p3ak demo ran with a degraded sandbox"
fi
grep -q 'verified' "$out/demo.out" || fail "the demo did not verify its audit trail"
tail -3 "$out/demo.out" >&2
step "p3ak demo passed with the full sandbox (output in $out/demo.out)"

# 4. the kernel as the image's default command: `p3ak up --passphrase-file /run/secrets/...`
podman --runtime runc run -d --name "$tag" --init \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --uidmap "0:$base:65536" --gidmap "0:$base:65536" --cap-add SYS_ADMIN --network=none \
  --security-opt "seccomp=$PWD/deploy/seccomp/oci/kernel.json" \
  "${secret[@]}" -v "$tag-home:/var/lib/p3ak" "$image" >/dev/null
for _ in $(seq 60); do
  podman exec "$tag" p3ak status >/dev/null 2>&1 && break
  [ "$(podman inspect --format '{{.State.Running}}' "$tag")" = true ] || break
  sleep 1
done
if ! podman exec "$tag" p3ak status >&2; then
  podman logs "$tag" >&2 || true
  fail "p3ak up did not come up"
fi
podman exec "$tag" p3ak doctor >&2 || fail "p3ak doctor failed in the container"
step "p3ak up: kernel, approval daemon and plugins running; doctor passes"

# The spool's modes and owners as docs/hitl.md defines them (daemon = hitl.ids[0] = 60990,
# writer = the kernel = hitl.ids[1] = 60991), read on the host through the volume (ids
# shifted by the user namespace's base).
home=$(podman volume inspect --format '{{.Mountpoint}}' "$tag-home")
daemon=$((base + 60990)) writer=$((base + 60991))
check_mode() {
  local path=$1 want=$2 got
  got=$(stat -c '%a %u %g' "$home/$path")
  [ "$got" = "$want" ] || fail "$path is '$got', docs/hitl.md says '$want' (mode uid gid)"
  printf '  %-22s %s\n' "$path" "$got" >&2
}
check_mode spool "710 $daemon $writer"
check_mode spool/staging "710 $daemon $writer"
for category in "$home"/spool/staging/*/; do
  check_mode "spool/staging/$(basename "$category")" "730 $daemon $writer"
done
check_mode spool/outbox "700 $daemon $daemon"
check_mode spool/sent "700 $daemon $daemon"
check_mode spool/rejected "700 $daemon $daemon"
check_mode hitl "711 $daemon $daemon"
check_mode run/kernel.pid "644 $writer $writer"
# Plugins run under their own uids (61000-61999 in the container).
ps_uids=$(for p in $(podman top "$tag" hpid | tail -n +2); do stat -c %u "/proc/$p" 2>/dev/null || true; done | sort -un | tr '\n' ' ')
printf '  host uids of the processes: %s\n' "$ps_uids" >&2
plugin_uids=0
for u in $ps_uids; do
  [ "$u" -ge $((base + 61000)) ] && [ "$u" -le $((base + 61999)) ] && plugin_uids=$((plugin_uids + 1))
done
[ "$plugin_uids" -ge 1 ] || fail "no process runs under a plugin uid"
grep -qw "$daemon" <<<"$ps_uids" || fail "no process runs as the approval daemon's uid"
grep -qw "$writer" <<<"$ps_uids" || fail "no process runs as the kernel's uid"
# TCP listeners: loopback only (the console on 127.0.0.1:7325; the API is a Unix socket).
pid=$(podman inspect --format '{{.State.Pid}}' "$tag")
listeners=$(awk 'NR > 1 && $4 == "0A" {print $2}' "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6")
for l in $listeners; do
  case $l in
    0100007F:* | 00000000000000000000000001000000:*) printf '  listening on loopback %s\n' "$l" >&2 ;;
    *) fail "a TCP listener beyond loopback: $l" ;;
  esac
done
step "spool modes as documented; daemon, kernel and $plugin_uids plugin uid(s) distinct; TCP on loopback only"

podman stop -t 30 "$tag" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$tag")
[ "$code" = 0 ] || { podman logs "$tag" >&2; fail "p3ak up exited $code on SIGTERM"; }
step "p3ak up stopped cleanly on SIGTERM"

size=$(podman image inspect --format '{{.Size}}' "$image")
printf 'oci-test: all passed in %ds; image %s, %s bytes (%s MiB)\n' \
  "$((SECONDS - t0))" "$image" "$size" "$((size / 1024 / 1024))" >&2
