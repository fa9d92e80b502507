#!/usr/bin/env bash
# The real-text corpus of envs/text-python.toml: the Python 3 documentation's reStructuredText
# sources as Debian ships them (package python3-doc; on Debian 12 Python 3.11.2: 497 files,
# 11.0 MB of English prose with code examples) under /usr/share/doc/python3/html/_sources.
# Licence: the PSF License Agreement of the Python documentation (see
# /usr/share/doc/python3-doc/copyright and the documentation's own "History and License" page).
# Installs the package when the folder is missing, then prints the folder and its size.
set -euo pipefail
DIR=/usr/share/doc/python3/html/_sources
if [ ! -d "$DIR" ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-doc >/dev/null
fi
echo "$DIR: $(find -L "$DIR" -name '*.txt' | wc -l) files, $(du -shL "$DIR" | cut -f1)"
