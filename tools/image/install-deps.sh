#!/bin/sh
# Install the locked runtime dependencies into a fresh virtualenv (the image's build stage).
# Usage: install-deps.sh <venv> <requirements.lock>
set -eu
venv=$1
lock=$2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --only-binary=:all: --require-hashes --no-deps -r "$lock"
# xds-protos ships stale copies of opentelemetry/proto over opentelemetry-proto's own files,
# which breaks the OTLP exporter; put the real ones back (as `make venv` does).
otel=$(awk '/^opentelemetry-proto==/{print $1; exit}' "$lock")
awk -v pkg="$otel" '$1 == pkg {on=1} on && !/^ *#/ {print} on && !/\\$/ {exit}' "$lock" > /tmp/otel.lock
"$venv/bin/pip" install -q --only-binary=:all: --require-hashes --no-deps --force-reinstall -r /tmp/otel.lock
rm -f /tmp/otel.lock
"$venv/bin/pip" check
# Nothing installs packages at run time: the installer is a development tool here.
"$venv/bin/pip" uninstall -q -y setuptools pip
