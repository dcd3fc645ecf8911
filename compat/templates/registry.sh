#!/usr/bin/env bash
# A registry on loopback with one small image, made without Docker: busybox in a rootfs,
# packed with umoci, pushed with skopeo. Usage: registry.sh PORT DIR (runs in the background;
# its pid is written to DIR/registry.pid).
set -euo pipefail
port=$1 dir=$2
rm -rf "$dir" && mkdir -p "$dir/rootfs/bin" "$dir/rootfs/srv"
cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! >"$dir/registry.pid"
cp /bin/busybox "$dir/rootfs/bin/busybox"
for c in sh echo cat ls id pwd env mkdir; do ln -s busybox "$dir/rootfs/bin/$c"; done
echo "from the image" >"$dir/rootfs/srv/hello.txt"
umoci init --layout "$dir/oci"
umoci new --image "$dir/oci:bb"
umoci insert --image "$dir/oci:bb" "$dir/rootfs" /
umoci config --image "$dir/oci:bb" --config.env IMAGE_VAR=from-config --config.workingdir /srv
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
skopeo copy --quiet --dest-tls-verify=false "oci:$dir/oci:bb" "docker://127.0.0.1:$port/busybox:1"
