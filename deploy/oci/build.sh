#!/usr/bin/env bash
# Builds P3AK's OCI image without pulling a base image: a minimal root file system extracted
# from Debian packages with mmdebstrap (only what `ldd` says the binary needs, plus the CA
# bundle for TLS), the release `p3ak` binary and the seccomp profiles, assembled with buildah
# into podman's local storage. Idempotent: run it again and it reuses what is up to date.
#
#   deploy/oci/build.sh              # builds localhost/p3ak:<version> (and :latest)
#
# Settings (environment):
#   P3AK_OCI_IMAGE    image name (default localhost/p3ak)
#   P3AK_OCI_OUT      work and report directory (default ~/.cache/p3ak-oci)
#   P3AK_OCI_SUITE    Debian suite (default bookworm)
#   P3AK_OCI_MIRROR   Debian mirror (default http://deb.debian.org/debian); point it at a
#                     snapshot (http://snapshot.debian.org/archive/debian/20261201T000000Z)
#                     for bit-for-bit rebuilds; with it set to a snapshot the security suite
#                     comes from P3AK_OCI_SECURITY_MIRROR
#   P3AK_OCI_SECURITY_MIRROR  (default http://deb.debian.org/debian-security)
#   P3AK_OCI_REFRESH=1  re-extract the Debian root file system even if one is cached
#   P3AK_OCI_BINARY   use this p3ak binary instead of `cargo build --release -p p3ak`
#   SOURCE_DATE_EPOCH timestamps of the image and its files (default: the last commit's time;
#                     the default is not passed to cargo, see below)
#
# Output: the image in podman's storage; $P3AK_OCI_OUT/contents.txt (packages with versions,
# then every file with its mode, owner and size), also printed to stdout with the image size.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/p3ak-target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
image="${P3AK_OCI_IMAGE:-localhost/p3ak}"
out="${P3AK_OCI_OUT:-$HOME/.cache/p3ak-oci}"
suite="${P3AK_OCI_SUITE:-bookworm}"
mirror="${P3AK_OCI_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${P3AK_OCI_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
mkdir -p "$out"

say() { printf 'oci: %s\n' "$*" >&2; }
t0=$SECONDS

# --- tools --------------------------------------------------------------------------------
need_pkgs=()
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
command -v buildah >/dev/null || need_pkgs+=(buildah)
command -v podman >/dev/null || need_pkgs+=(podman)
command -v runc >/dev/null || need_pkgs+=(runc)
# podman's --init (test.sh, compose.yaml); only a Recommends of podman.
[ -x /usr/libexec/podman/catatonit ] || need_pkgs+=(catatonit)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}"
fi

# --- the binary ---------------------------------------------------------------------------
if [ -n "${P3AK_OCI_BINARY:-}" ]; then
  bin=$P3AK_OCI_BINARY
else
  say "cargo build --release -p p3ak"
  cargo build --release --locked -p p3ak
  bin="$CARGO_TARGET_DIR/release/p3ak"
fi
# Only now: cc-rs reruns the C builds (ring, psm) when SOURCE_DATE_EPOCH changes, so setting it
# for cargo would rebuild them at every commit (set it yourself to build the binary with it).
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH
version=$("$bin" --version | awk '{print $2}')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
say "binary $bin ($version, $(du -h "$bin" | cut -f1))"

# The packages the root file system holds. libc6, libgcc-s1 and libstdc++6 (for usearch, the
# approximate vector index's C++) are what `ldd` names (checked below); ca-certificates only gives its CA bundle (the TLS roots the providers, connectors and
# web tools verify servers with; rustls-platform-verifier reads /etc/ssl/certs), extracted
# without its dependencies (openssl, debconf, perl: only its maintainer script needs them).
packages=(libc6 libgcc-s1 libstdc++6)
for lib in $(ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ && !/=>/ {print $1}'); do
  real=$(readlink -f "$lib")
  owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true)
  owner=${owner%%:*}
  case " ${packages[*]} " in
    *" $owner "*) ;;
    *) say "error: the binary needs $lib (package '${owner:-?}'), which the image does not include"; exit 1 ;;
  esac
done

# --- the Debian root file system (layer 1) --------------------------------------------------
key=$(printf '%s\n' "$suite" "$mirror" "$security_mirror" "${packages[@]}" ca-certificates \
  "$(sed -n '/^# --- the Debian root/,/^# --- end of rootfs/p' "$0")" | sha256sum | cut -c1-16)
rootfs="$out/rootfs-$suite-$key.tar"
if [ ! -s "$rootfs" ] || [ "${P3AK_OCI_REFRESH:-0}" = 1 ]; then
  say "mmdebstrap $suite: ${packages[*]} + ca-certificates' bundle"
  rm -f "$rootfs.tmp" "$out/packages.txt.tmp"
  # Runs after the packages are extracted (the extract variant runs no customize hooks): it
  # records the versions, adds the CA bundle, and drops what the binary never uses.
  hook=$(cat <<'HOOK'
set -eu
root=$1
for deb in "$root"/var/cache/apt/archives/*.deb; do
  dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}\n' "$deb"
done > "$P3AK_PACKAGES"
dl=$(mktemp -d)
chmod 0755 "$dl" # apt downloads as _apt
(cd "$dl" && APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get download -q -o APT::Sandbox::User=root ca-certificates >&2)
dpkg-deb --show --showformat='${Package} ${Version} ${Architecture} (CA bundle only)\n' "$dl"/*.deb >> "$P3AK_PACKAGES"
dpkg-deb --extract "$dl"/*.deb "$dl/x"
mkdir -p "$root/etc/ssl/certs" "$root/usr/share/doc/ca-certificates"
find "$dl/x/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | while read -r crt; do
  cat "$crt"
  [ -z "$(tail -c1 "$crt")" ] || echo
done > "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"
cp "$dl/x/usr/share/doc/ca-certificates/copyright" "$root/usr/share/doc/ca-certificates/"
rm -rf "$dl"
ldconfig -r "$root"
HOOK
)
  tree="$out/rootfs.d"
  rm -rf "$tree"
  P3AK_PACKAGES="$out/packages.txt.tmp" mmdebstrap --quiet --variant=extract --mode=root \
    --format=directory \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --extract-hook="$hook" \
    "$suite" "$tree" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" \
    "deb $security_mirror $suite-security main"
  # gconv (iconv modules, 8 MB): Rust never calls iconv. Docs but the copyright files, lintian
  # overrides; mmdebstrap's apt and dpkg setup (nothing installs packages in the image); the
  # host's hostname and resolv.conf (podman provides both; without them the layer is the same
  # on every host); device nodes (podman provides /dev).
  rm -rf "$tree/usr/lib/x86_64-linux-gnu/gconv" "$tree/usr/share/lintian" \
    "$tree/var/cache/apt" "$tree/var/lib/apt" "$tree/var/log/apt" "$tree/var/lib/dpkg" \
    "$tree/var/cache/ldconfig" "$tree/etc/apt" "$tree/etc/dpkg" "$tree/etc/fstab" \
    "$tree/etc/hostname" "$tree/etc/resolv.conf"
  find "$tree/dev" -mindepth 1 -delete
  find "$tree/usr/share/doc" -type f ! -name copyright -delete
  find "$tree/var" -depth -type d -empty -delete
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$rootfs.tmp" -C "$tree" .
  rm -rf "$tree"
  mv "$out/packages.txt.tmp" "$out/packages-$key.txt"
  mv "$rootfs.tmp" "$rootfs"
fi
# --- end of rootfs ---

# --- P3AK's files (layer 2) -----------------------------------------------------------------
stage="$out/p3ak-layer"
rm -rf "$stage" "$out/p3ak-layer.tar"
mkdir -p "$stage"
install -D -m 0755 "$bin" "$stage/usr/bin/p3ak"
install -d -m 0755 "$stage/usr/share/p3ak/seccomp/oci" "$stage/usr/share/p3ak/seccomp/traced"
install -m 0644 deploy/seccomp/*.json "$stage/usr/share/p3ak/seccomp/"
install -m 0644 deploy/seccomp/oci/*.json "$stage/usr/share/p3ak/seccomp/oci/"
install -m 0644 deploy/seccomp/traced/*.json "$stage/usr/share/p3ak/seccomp/traced/"
install -m 0644 "$out/packages-$key.txt" "$stage/usr/share/p3ak/packages.txt"
install -m 0644 LICENSE "$stage/usr/share/doc/p3ak/copyright" -D
# Accounts: root only (and nobody). The approval daemon (60990), the kernel (60991) and the
# plugins (61000-61999) run under numeric ids that must NOT be accounts: `p3ak doctor`'s `ids`
# check fails when `hitl.ids` belong to one, and plugin ids that do are skipped.
install -d -m 0755 "$stage/etc"
printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' > "$stage/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' > "$stage/etc/group"
chmod 0644 "$stage/etc/passwd" "$stage/etc/group"
install -d -m 1777 "$stage/tmp"
install -d -m 0700 "$stage/root"
# The home (a volume): 0700 root; `p3ak up` lays it out with the modes docs/hitl.md gives.
install -d -m 0700 "$stage/var/lib/p3ak"
install -d -m 0755 "$stage/run/secrets"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --owner=0 --group=0 --numeric-owner \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$out/p3ak-layer.tar" -C "$stage" .

# --- the image ------------------------------------------------------------------------------
say "buildah: assembling $image:$version"
# Named after the root file system's bytes: a refreshed rootfs makes a new base image.
base="localhost/p3ak-rootfs:$suite-$(sha256sum "$rootfs" | cut -c1-16)"
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$rootfs" / >/dev/null
  buildah commit --quiet --rm --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
    "$ctr" "$base" >/dev/null
fi
ctr=$(buildah from "$base")
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah add --quiet "$ctr" "$out/p3ak-layer.tar" / >/dev/null
buildah config \
  --entrypoint '["/usr/bin/p3ak"]' \
  --cmd '["up", "--passphrase-file", "/run/secrets/p3ak_passphrase"]' \
  --user 0:0 \
  --workingdir / \
  --env P3AK_HOME=/var/lib/p3ak \
  --env PATH=/usr/bin:/bin \
  --volume /var/lib/p3ak \
  --stop-signal SIGTERM \
  --label org.opencontainers.image.title=p3ak \
  --label "org.opencontainers.image.description=P3AK: a private AI kernel (vault, policy engine, sandboxed plugins, approval daemon)" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.licenses=$(awk -F'"' '/^license *=/ {print $2; exit}' Cargo.toml)" \
  --label "org.opencontainers.image.created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
  --label "org.opencontainers.image.base.name=debian:$suite (mmdebstrap, extract: ${packages[*]})" \
  "$ctr"
buildah commit --quiet --rm --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
  "$ctr" "$image:$version" >/dev/null
trap - EXIT
buildah tag "$image:$version" "$image:latest"

# --- report ---------------------------------------------------------------------------------
id=$(podman image inspect --format '{{.Id}}' "$image:$version")
size=$(podman image inspect --format '{{.Size}}' "$image:$version")
# What a registry would store and a pull would move: the layers gzip-compressed.
gz=$(($(gzip -6 -c "$rootfs" | wc -c) + $(gzip -6 -c "$out/p3ak-layer.tar" | wc -c)))
{
  echo "# $image:$version  id ${id:0:12}  size $size bytes ($((size / 1024 / 1024)) MiB), layers gzip-compressed $gz bytes ($((gz / 1024 / 1024)) MiB)"
  echo "# SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH suite=$suite mirror=$mirror revision=$revision"
  echo "## Debian packages (layer 1, extracted by mmdebstrap --variant=extract)"
  cat "$out/packages-$key.txt"
  echo "## files, layer 1 (Debian)"
  tar -tvf "$rootfs" --numeric-owner | awk '{printf "%s %s %10s %s", $1, $2, $3, $6; for (i = 7; i <= NF; i++) printf " %s", $i; print ""}'
  echo "## files, layer 2 (P3AK)"
  tar -tvf "$out/p3ak-layer.tar" --numeric-owner | awk '{printf "%s %s %10s %s", $1, $2, $3, $6; for (i = 7; i <= NF; i++) printf " %s", $i; print ""}'
} > "$out/contents.txt"
cat "$out/contents.txt"
say "image $image:$version (and :latest), $size bytes ($((size / 1024 / 1024)) MiB; $((gz / 1024 / 1024)) MiB compressed), id ${id:0:12}"
say "contents: $out/contents.txt; took $((SECONDS - t0))s"
