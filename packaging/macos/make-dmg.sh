#!/usr/bin/env bash
# Wraps the .app bundle that build.spec makes into a compressed disk image, with a link to
# /Applications beside it so that installing is one drag.
#   packaging/macos/make-dmg.sh "dist/full/Model Training Manager.app" dist/Model-Training-Manager-0.1.0.dmg 0.1.0
set -euo pipefail
app="$1"
dmg="$2"
version="${3:-}"
if [ ! -d "$app" ]; then
    echo "no app bundle at $app: run packaging/build.py on macOS first" >&2
    exit 1
fi
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
cp -R "$app" "$staging/"
ln -s /Applications "$staging/Applications"
# An unsigned app downloaded from the internet is quarantined; ad-hoc signing keeps the
# bundle's own signature consistent after PyInstaller rewrote its binaries.
codesign --force --deep --sign - "$staging/$(basename "$app")" || true
rm -f "$dmg"
hdiutil create -volname "Model Training Manager ${version}" -srcfolder "$staging" \
    -fs HFS+ -format UDZO -imagekey zlib-level=9 -ov "$dmg"
echo "$dmg"
