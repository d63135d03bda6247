#!/usr/bin/env bash
# Provides Apache Kafka's broker for the tests, the benchmarks and a developer's machine
# (ADR 0007): the jars of deploy/kafka/pom.xml (org.apache.kafka:kafka_2.13, pinned there) and
# their runtime dependencies, resolved from Maven Central by Maven (its local repository,
# ~/.m2, is the cache between runs), copied into $KADR_KAFKA_HOME/libs (default:
# .deps/kafka-<version> in the checkout) and checked against deploy/kafka/jars.sha256.
# Needs Java 17+ and Maven (scripts/setup-debian.sh installs both). Idempotent.
#
#   scripts/setup-kafka.sh          resolve, copy, verify (nothing to do when up to date)
#   scripts/setup-kafka.sh --home   prints the folder scripts/kafka.sh runs the broker from
#
# Start a broker with scripts/kafka.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pom="$root/deploy/kafka/pom.xml"
sums="$root/deploy/kafka/jars.sha256"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
home="${KADR_KAFKA_HOME:-$root/.deps/kafka-$version}"

if [[ "${1:-}" == --home ]]; then
  echo "$home"
  exit 0
fi

stamp="$home/.kadr-stamp"
want="$(sha256sum "$pom" "$sums" "${BASH_SOURCE[0]}" | cut -d' ' -f1 | tr '\n' ' ')"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup-kafka: Apache Kafka $version in $home up to date"
  exit 0
fi

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "setup-kafka: $tool not found (scripts/setup-debian.sh installs it)" >&2
    exit 1
  fi
done

echo "setup-kafka: resolving Apache Kafka $version (deploy/kafka/pom.xml) with Maven"
rm -rf "$home/libs.new"
mkdir -p "$home"
mvn -B -q -Dstyle.color=never -f "$pom" \
  org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies -DincludeScope=runtime \
  -DoutputDirectory="$home/libs.new"
# Exactly the jars the checksum file names, each with its checksum: a new or changed
# dependency fails here instead of running unchecked.
(
  cd "$home/libs.new"
  got="$(ls -1 ./*.jar | sed 's:^\./::' | sort)"
  listed="$(awk '{print $2}' "$sums" | sort)"
  if [[ "$got" != "$listed" ]]; then
    echo "setup-kafka: the resolved jars differ from deploy/kafka/jars.sha256:" >&2
    diff <(echo "$listed") <(echo "$got") >&2 || true
    exit 1
  fi
  sha256sum --quiet -c "$sums"
)
rm -rf "$home/libs"
mv "$home/libs.new" "$home/libs"
echo "$want" >"$stamp"
echo "setup-kafka: Apache Kafka $version in $home ($(ls "$home/libs" | wc -l) jars, checksums ok)"
