#!/usr/bin/env bash
# The CPU container image, built and run for real without a Docker daemon (scripts/image.sh:
# buildah, chroot isolation, the host's network):
#
#   tests/image/image_test.sh BUILD_DIR
#
# 1. builds deploy/docker/Dockerfile's runtime stages around BUILD_DIR's `kadr` (KADR_FROM=
#    prebuilt: the same stages and package list as the full build, without compiling kadr a
#    second time) and prints the build time, the size and the layers; the size must stay under
#    400 MB;
# 2. runs the image's own ENTRYPOINT and CMD (`kadr up`) with a data volume and a read-only
#    models volume: its HEALTHCHECK command passes once ready (time printed), a real photo
#    through POST /api/v1/detect is answered with detections, kadr runs as uid 10001, the data
#    volume is written and the models volume cannot be, SIGTERM ends it with exit status 0;
# 3. runs the image as the compose file's roles against Apache Kafka started here
#    (scripts/kafka.sh): `kadr topics`, then worker, viewer, camera and gateway, each healthy by
#    the image's HEALTHCHECK, a photo through the gateway answered by the worker's container,
#    and each role stopped by SIGTERM with exit status 0.
#
# Needs root, buildah and debootstrap (scripts/setup-debian.sh), and $KADR_TEST_DATA for the
# model and the photo; prints "kadr image test skipped: ..." (CTest: skipped) without them.
# KADR_IMAGE_TEST_IMAGE=NAME skips step 1's build and checks NAME instead (the whole
# multi-stage build: `scripts/image.sh build --tag NAME`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
(($# == 1)) || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
build_dir="$(cd "$1" && pwd)"
image=localhost/kadr:cpu
max_bytes=400000000

skip() {
  echo "kadr image test skipped: $*"
  exit 0
}
[[ $(id -u) == 0 ]] || skip "needs root (buildah's chroot isolation)"
for tool in buildah debootstrap curl jq; do
  command -v "$tool" >/dev/null || skip "no $tool (run scripts/setup-debian.sh)"
done
data="${KADR_TEST_DATA:-}"
[[ -n $data && -f $data/models/yolox_nano.onnx && -f $data/media/bus.jpg ]] ||
  skip "KADR_TEST_DATA does not hold models/yolox_nano.onnx and media/bus.jpg"

image_sh="$root/scripts/image.sh"
work="$(mktemp -d)"
export KADR_IMAGE_RUN_PREFIX="kadr-image-test-$$"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $(kadr_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The working containers of runs that were killed (a normal run removes its own).
  "$image_sh" buildah containers --format '{{.ContainerID}} {{.ContainerName}}' 2>/dev/null |
    awk -v prefix="$KADR_IMAGE_RUN_PREFIX-" 'index($2, prefix) == 1 { print $1 }' |
    xargs -r "$image_sh" buildah rm >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  local log
  [[ -n ${KADR_IMAGE_TEST_KEEP:-} ]] && cp -r "$work" "$KADR_IMAGE_TEST_KEEP"
  for log in "$work"/*.log; do
    [[ -f $log ]] || continue
    echo "--- $log (warnings, errors, models; then the last lines)" >&2
    grep -E ' (warn|error|critical) |model' "$log" | grep -v STEP | head -20 >&2 || true
    tail -15 "$log" >&2
  done
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The kadr processes this test started: containers run as host processes whose root is the
# container's own folder; their environment names this test's work folder.
kadr_pids() {
  local p
  for p in $(pgrep -x kadr 2>/dev/null); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "KADR_TEST_TAG=$work" && echo "$p"
  done
  return 0
}
# The pid of the kadr process whose KADR_HTTP_PORT is $1.
kadr_pid_on() {
  local p
  for p in $(kadr_pids); do
    tr '\0' '\n' <"/proc/$p/environ" | grep -qx "KADR_HTTP_PORT=$1" && { echo "$p"; return; }
  done
}

# wait_healthy PORT RUNNER WHAT SECONDS: polls /healthz on PORT from outside (each run of the
# image's HEALTHCHECK is a fresh working container: a full copy of the image with vfs), then
# runs the image's own HEALTHCHECK command once, which must pass.
wait_healthy() {
  local port="$1" runner="$2" what="$3" deadline=$((SECONDS + $4))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/healthz") == 200 ]]; do
    kill -0 "$runner" 2>/dev/null || fail "$what exited before it was healthy"
    ((SECONDS < deadline)) || fail "$what did not answer /healthz within $4 s"
    sleep 0.5
  done
  "$image_sh" health "$image" -e "KADR_HTTP_PORT=$port" >/dev/null 2>&1 ||
    fail "$what answers /healthz but the image's HEALTHCHECK command fails"
}

# --- 1. build ----------------------------------------------------------------------------------
if [[ -n ${KADR_IMAGE_TEST_IMAGE:-} ]]; then
  # An image built before, e.g. by the whole multi-stage build (`scripts/image.sh build`).
  image="$KADR_IMAGE_TEST_IMAGE"
  echo "image test: testing $image as built (KADR_IMAGE_TEST_IMAGE)"
else
  started=$SECONDS
  "$image_sh" build --prebuilt "$build_dir" --tag "$image" >"$work/build.log" 2>&1 ||
    fail "the image did not build"
  grep -E '^image:|^  (layer|total)' "$work/build.log"
  echo "image test: build took $((SECONDS - started)) s"
fi
size="$("$image_sh" size "$image")" || fail "no size for $image"
echo "image test: $image is $((size / 1000000)) MB (target: under $((max_bytes / 1000000)) MB)"
[[ -n ${KADR_IMAGE_TEST_IMAGE:-} ]] && "$image_sh" layers "$image"
((size < max_bytes)) || fail "the image is $size bytes, over $max_bytes"

config="$("$image_sh" buildah inspect --type image "$image" | jq -c '.Docker.config')"
[[ $(jq -r '.User' <<<"$config") == 10001:10001 ]] || fail "the image's USER is not 10001:10001: $config"
[[ $(jq -c '.Entrypoint' <<<"$config") == '["kadr"]' ]] || fail "ENTRYPOINT is not kadr"
[[ $(jq -c '.Cmd' <<<"$config") == '["up"]' ]] || fail "CMD is not up"

# --- 2. kadr up from the image's own entrypoint and command ----------------------------------
models="$work/models"
mkdir -p "$models" "$work/up-data"
cp "$data/models/yolox_nano.onnx" "$models/"
chown 10001:10001 "$work/up-data"
chmod 0750 "$work/up-data"
port="$(free_port)"
common=(-e "KADR_TEST_TAG=$work" -v "$models:/models:ro")

# Checks that need no server: the user, a writable data volume, a read-only models volume,
# every library kadr links found in the image itself, and the packages they came from listed
# for scanners (status.d) with their copyright files.
probe="$("$image_sh" exec "$image" "${common[@]}" -v "$work/up-data:/var/lib/kadr" -- \
  sh -c 'id -u; touch /var/lib/kadr/probe && echo data-writable
         touch /models/probe 2>/dev/null || echo models-read-only
         ldd /usr/local/bin/kadr | grep "not found" || echo libraries-found
         grep -qx "Package: libopencv-core406" /var/lib/dpkg/status.d/libopencv-core406 &&
           test -s /usr/share/doc/libopencv-core406/copyright && echo packages-listed')" ||
  fail "the probe command did not run in the image"
[[ $probe == $'10001\ndata-writable\nmodels-read-only\nlibraries-found\npackages-listed' ]] ||
  fail "user, volumes, libraries and package records in the image: got '$probe'"
rm -f "$work/up-data/probe"

started=$SECONDS
"$image_sh" run "$image" "${common[@]}" -e "KADR_HTTP_PORT=$port" \
  -v "$work/up-data:/var/lib/kadr" >"$work/up.log" 2>&1 &
up_runner=$!
pids+=("$up_runner")
wait_healthy "$port" "$up_runner" "kadr up" 60
echo "image test: kadr up healthy $((SECONDS - started)) s after start (HEALTHCHECK: kadr health)"

token="$(sed -n 's/^kadr: first admin token: //p' "$work/up.log" | head -1)"
[[ -n $token ]] || fail "kadr up printed no first admin token (KADR_HOST=0.0.0.0 turns access control on)"
# detect PORT OUTPUT: POST bus.jpg, print the HTTP status. Healthy is not ready: until a worker
# has announced the model (and joined its group, on Kafka) the gateway answers 404 or 503:
# retried for 30 s.
detect() {
  local status="" attempt
  for attempt in $(seq 60); do
    status="$(curl -s -o "$2" -w '%{http_code}' --max-time 60 -H "Authorization: Bearer $token" \
      -F "image=@$data/media/bus.jpg;type=image/jpeg" "http://127.0.0.1:$1/api/v1/detect?model=yolox_nano")"
    [[ $status == 503 || $status == 404 ]] || break
    sleep 0.5
  done
  echo "$status"
}
status="$(detect "$port" "$work/up-detect.json")"
[[ $status == 200 ]] || fail "POST /api/v1/detect answered $status: $(head -c 300 "$work/up-detect.json")"
classes="$(jq -r '[.detections[].label] | join(",")' "$work/up-detect.json")"
[[ ,$classes, == *,bus,* && ,$classes, == *,person,* ]] ||
  fail "bus.jpg: expected a bus and persons, got '$classes'"
echo "image test: POST /api/v1/detect on bus.jpg -> 200, $classes"

pid="$(kadr_pid_on "$port")"
[[ -n $pid ]] || fail "no kadr process found for port $port"
uids="$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")"
[[ $uids == "10001 10001 10001 10001" ]] || fail "kadr runs as uids '$uids', not 10001"
[[ -n $(find "$work/up-data" -mindepth 1 -user 10001 -print -quit) ]] ||
  fail "kadr up wrote nothing to the data volume: $(ls -laR "$work/up-data" | head -20)"

kill -TERM "$pid"
started=$SECONDS
exit_status=0
wait "$up_runner" || exit_status=$?
echo "image test: SIGTERM -> kadr up exited with status $exit_status after $((SECONDS - started)) s"
((exit_status == 0)) || fail "kadr up exited with status $exit_status after SIGTERM"

# --- 3. the compose file's roles against Apache Kafka ---------------------------------------
"$root/scripts/kafka.sh" --port 0 --dir "$work/kafka" >"$work/kafka.log" 2>&1 &
pids+=("$!")
for _ in $(seq 120); do
  grep -q '^bootstrap: ' "$work/kafka.log" && break
  sleep 0.5
done
brokers="$(sed -n 's/^bootstrap: //p' "$work/kafka.log" | head -1)"
[[ -n $brokers ]] || fail "Apache Kafka did not start"

auth="$work/auth"
mkdir -p "$auth" "$work/videos" "$work/viewer-data" "$work/camera-data"
chown 10001:10001 "$auth" "$work/videos" "$work/viewer-data" "$work/camera-data"
roles_env=(-e "KADR_BROKERS=$brokers" -e KADR_CONFIG=/etc/kadr/kadr.json
           -e KADR_AUTH_FILE=/var/lib/kadr/auth/tokens.json
           -v "$root/deploy/compose/kadr.json:/etc/kadr/kadr.json:ro")
"$image_sh" run "$image" "${common[@]}" "${roles_env[@]}" -e KADR_PARTITIONS=2 \
  -e KADR_REPLICATION_FACTOR=1 -- topics >"$work/topics.log" 2>&1 ||
  fail "kadr topics failed"
echo "image test: kadr topics -> exit 0"

declare -A role_port=() role_runner=()
start_role() {  # start_role ROLE [buildah run option]...
  local role="$1"
  shift
  role_port[$role]="$(free_port)"
  "$image_sh" run "$image" "${common[@]}" "${roles_env[@]}" -e "KADR_HTTP_PORT=${role_port[$role]}" \
    "$@" -- "$role" >"$work/$role.log" 2>&1 &
  role_runner[$role]=$!
  pids+=("$!")
}
start_role worker -e KADR_MODEL=yolox_nano -v "$auth:/var/lib/kadr/auth"
start_role viewer -e KADR_DATA_DIR=/var/lib/kadr -e KADR_VIDEO_DIR=/var/lib/kadr/videos \
  -v "$work/viewer-data:/var/lib/kadr" -v "$work/videos:/var/lib/kadr/videos" -v "$auth:/var/lib/kadr/auth"
start_role camera -e KADR_CAMERA_ID=camera-1 -e KADR_DATA_DIR=/var/lib/kadr \
  -e KADR_VIDEO_DIR=/var/lib/kadr/videos -v "$work/camera-data:/var/lib/kadr" \
  -v "$work/videos:/var/lib/kadr/videos" -v "$auth:/var/lib/kadr/auth"
start_role gateway -e KADR_VIDEO_DIR=/var/lib/kadr/videos -v "$work/videos:/var/lib/kadr/videos" \
  -v "$auth:/var/lib/kadr/auth"

started=$SECONDS
for role in worker viewer camera gateway; do
  wait_healthy "${role_port[$role]}" "${role_runner[$role]}" "$role" $((90 - (SECONDS - started)))
  echo "image test: $role healthy (HEALTHCHECK) $((SECONDS - started)) s after the roles started"
done

# The first role to find no admin token in the shared file created it and printed it.
token="$(sed -n 's/^kadr: first admin token: //p' "$work"/{worker,viewer,camera,gateway}.log | head -1)"
[[ -n $token ]] || fail "no role printed the first admin token"
status="$(detect "${role_port[gateway]}" "$work/roles-detect.json")"
[[ $status == 200 ]] || fail "the gateway answered $status: $(head -c 300 "$work/roles-detect.json")"
classes="$(jq -r '[.detections[].label] | join(",")' "$work/roles-detect.json")"
[[ ,$classes, == *,bus,* ]] || fail "through the roles, bus.jpg gave '$classes'"
echo "image test: gateway -> Kafka -> worker container: 200, $classes"

for role in gateway camera viewer worker; do
  pid="$(kadr_pid_on "${role_port[$role]}")"
  [[ -n $pid ]] || fail "no $role process found"
  kill -TERM "$pid"
  exit_status=0
  wait "${role_runner[$role]}" || exit_status=$?
  ((exit_status == 0)) || fail "$role exited with status $exit_status after SIGTERM"
  echo "image test: SIGTERM -> $role exited with status 0"
done
echo "image test: ok"
