#!/bin/sh
# Refreshes the vendored terminal (xterm.js) from npm: the pinned versions' dist files only.
# Run it by hand after changing a version below, then commit what changed in this directory.
#
# - xterm.js, xterm.css: the terminal (5.5 ships a UMD build only; loaded as a classic
#   script it defines globalThis.Terminal).
# - addon-fit.js: sizes the terminal to its container.
# - addon-canvas.js: the canvas renderer. xterm's default DOM renderer injects <style>
#   elements and style="" attributes, which the dashboard's CSP (style-src 'self') blocks;
#   the canvas renderer draws with CSSOM and canvas only, and loaded before open() the DOM
#   renderer is never created.
set -eu
XTERM=5.5.0
FIT=0.10.0
CANVAS=0.7.0

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@xterm/xterm@$XTERM" "@xterm/addon-fit@$FIT" "@xterm/addon-canvas@$CANVAS" >/dev/null
for t in *.tgz; do mkdir "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done

cp "xterm-xterm-$XTERM/package/lib/xterm.js" "$here/xterm.js"
cp "xterm-xterm-$XTERM/package/css/xterm.css" "$here/xterm.css"
cp "xterm-addon-fit-$FIT/package/lib/addon-fit.js" "$here/addon-fit.js"
cp "xterm-addon-canvas-$CANVAS/package/lib/addon-canvas.js" "$here/addon-canvas.js"
cp "xterm-xterm-$XTERM/package/LICENSE" "$here/LICENSE.xterm"
cp "xterm-addon-fit-$FIT/package/LICENSE" "$here/LICENSE.addon-fit"
cp "xterm-addon-canvas-$CANVAS/package/LICENSE" "$here/LICENSE.addon-canvas"
# The bundles end with a sourceMappingURL to maps not vendored: drop it (no 404 in devtools).
for f in xterm.js addon-fit.js addon-canvas.js; do
  sed -i '/^\/\/# sourceMappingURL=/d' "$here/$f"
done
printf 'xterm %s, addon-fit %s, addon-canvas %s\n' "$XTERM" "$FIT" "$CANVAS" > "$here/VERSIONS"
echo "vendored: $(cat "$here/VERSIONS")"
