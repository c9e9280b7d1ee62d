#!/usr/bin/env bash
# System packages the evaluation sandbox needs: bubblewrap (the sandbox), and
# the MultiPL-E toolchains a Debian/Ubuntu machine can get from its archive
# (PHP; the javatuples jar for Java). g++, javac, node and rustc are used when
# present; Swift has no Debian package and is reported as skipped.
# Installs only what is missing, and only with apt-get as root; otherwise it
# says what to install and leaves the machine alone.
set -u
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v php >/dev/null 2>&1 || need+=(php-cli)
[ -f /usr/share/java/javatuples-1.2.jar ] || need+=(libjavatuples-java)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: evaluation needs ${need[*]} (e.g. sudo apt-get install ${need[*]}); tests that need them are skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; } \
  || echo "note: could not install ${need[*]}; tests that need them are skipped" >&2
exit 0
