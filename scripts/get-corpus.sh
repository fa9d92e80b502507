#!/usr/bin/env bash
# The real-text corpus of envs/text-python.toml: the Python 3 documentation's reStructuredText
# sources as Debian ships them in python3.X-doc (Debian 12, Python 3.11.2: 497 files, 11 MB of
# English prose with code examples), unpacked from the package into DEST (default
# /usr/local/share/ahr/python-doc) — not installed under /usr/share/doc, whose contents
# envs/text.toml reads. Licence: the PSF License Agreement of the Python documentation (the
# package's debian/copyright, and the documentation's "History and License" page). Debian's
# security updates change the package (3.11.2-6+deb12u7, installed 2026-12-04, differs from the
# build of the earlier sessions in four training files; the held-out files are the same): the
# version unpacked is written to DEST/PACKAGE, and every run records the corpus hash.
#   scripts/get-corpus.sh [DEST]
set -euo pipefail
DEST=${1:-/usr/local/share/ahr/python-doc}
SUDO=""
if [ "$(id -u)" != 0 ] && [ ! -w "$(dirname "$DEST")" ]; then SUDO="sudo"; fi
if [ ! -d "$DEST" ]; then
  PKG=$(apt-cache depends python3-doc 2>/dev/null | awk '/Depends: python3\.[0-9]+-doc/ {print $2; exit}')
  if [ -z "$PKG" ]; then
    $SUDO apt-get update -qq
    PKG=$(apt-cache depends python3-doc | awk '/Depends: python3\.[0-9]+-doc/ {print $2; exit}')
  fi
  TMP=$(mktemp -d)
  (cd "$TMP" && apt-get download -qq "$PKG")
  VERSION=$(dpkg-deb -f "$TMP"/*.deb Version)
  dpkg-deb -x "$TMP"/*.deb "$TMP/x"
  SRC=$(find "$TMP/x/usr/share/doc" -type d -name _sources | head -n 1)
  $SUDO mkdir -p "$DEST"
  $SUDO cp -r "$SRC"/. "$DEST"
  cp "$TMP/x/usr/share/doc/$PKG/copyright" "$TMP/copyright" 2>/dev/null && $SUDO cp "$TMP/copyright" "$DEST/COPYRIGHT" || true
  echo "$PKG $VERSION" > "$TMP/PACKAGE" && $SUDO cp "$TMP/PACKAGE" "$DEST/PACKAGE"
  rm -rf "$TMP"
fi
echo "$DEST: $(find "$DEST" -name '*.txt' | wc -l) files, $(du -sh "$DEST" | cut -f1), $(cat "$DEST/PACKAGE" 2>/dev/null || echo "package version not recorded")"
