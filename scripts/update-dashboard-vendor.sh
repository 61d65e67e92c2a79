#!/usr/bin/env bash
# Vendor uPlot (MIT) into the admin dashboard's static files: the dashboard loads nothing from a
# CDN, so the chart library ships inside the package.
#
#   scripts/update-dashboard-vendor.sh 1.6.32
#
# Fetches the published npm tarball of that version (`npm pack`, which checks the registry's
# integrity hash; without npm, curl from the registry and the sha512 checked against the
# registry's metadata), then copies dist/uPlot.iife.min.js, dist/uPlot.min.css and LICENSE into
# app/dashboard/static/vendor/ and records the version and the files' sha256 in VERSIONS.
set -euo pipefail

version="${1:?usage: $0 VERSION (e.g. 1.6.32)}"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    echo "not a release version: $version" >&2
    exit 2
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="$root/app/dashboard/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tarball="$work/uplot-$version.tgz"
if command -v npm >/dev/null; then
    (cd "$work" && npm pack --silent "uplot@$version" >/dev/null)
else
    url="https://registry.npmjs.org/uplot/-/uplot-$version.tgz"
    curl --fail --silent --show-error --location --output "$tarball" "$url"
    expected="$(curl --fail --silent --show-error "https://registry.npmjs.org/uplot/$version" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["dist"]["integrity"])')"
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [[ "$expected" != "$actual" ]]; then
        echo "integrity mismatch for $url: registry says $expected, got $actual" >&2
        exit 1
    fi
fi
test -f "$tarball"
tar -xzf "$tarball" -C "$work"

mkdir -p "$vendor"
install -m 0644 "$work/package/dist/uPlot.iife.min.js" "$vendor/uPlot.iife.min.js"
install -m 0644 "$work/package/dist/uPlot.min.css" "$vendor/uPlot.min.css"
install -m 0644 "$work/package/LICENSE" "$vendor/LICENSE"
{
    echo "uPlot $version (MIT, https://github.com/leeoniya/uPlot), from the npm registry"
    echo "by scripts/update-dashboard-vendor.sh $version; sha256:"
    (cd "$vendor" && sha256sum uPlot.iife.min.js uPlot.min.css LICENSE)
} >"$vendor/VERSIONS"
echo "vendored uPlot $version into ${vendor#"$root"/}"
