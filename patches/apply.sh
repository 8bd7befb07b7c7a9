#!/usr/bin/env bash
# Apply speechft's patches to a source checkout of s3prl (or fairseq). See patches/README.md.
set -u

usage() {
    cat <<'EOF'
usage: patches/apply.sh [--check] [--reverse] ROOT

Applies speechft's unified diffs to a source checkout, in order, and skips the ones already
applied (running it twice is a no-op). ROOT is the checkout's top folder:
  an s3prl source root (has s3prl/hub.py)          -> patches/s3prl/*.patch
  a fairseq source root (has fairseq/__init__.py)  -> patches/fairseq/*.patch

Every patch is first tried on a scratch copy of the files it touches; ROOT is only changed
when all of them go through, so a conflict leaves ROOT as it was.

  --check     dry run: report per patch "applies", "already applied" or "CONFLICT"
              (with --reverse: "reverses", "not applied" or "CONFLICT"); changes nothing
  --reverse   undo the applied patches, last first
  -h, --help  this text

Exit status: 0 done (or, with --check, nothing conflicts), 1 a patch conflicts, 2 bad usage.
SPEECHFT_PATCHES_DIR replaces the folder that holds s3prl/ and fairseq/ (default: this
script's folder).
EOF
}

die() { echo "apply.sh: error: $*" >&2; exit 2; }

check=0
reverse=0
root=""
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        --check) check=1 ;;
        --reverse) reverse=1 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *) [ -z "$root" ] || die "one ROOT only (got '$root' and '$arg')"; root="$arg" ;;
    esac
done
[ -n "$root" ] || { usage >&2; exit 2; }
[ -d "$root" ] || die "$root: no such folder"
command -v patch >/dev/null 2>&1 || die "GNU patch is needed (apt-get install patch)"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base="${SPEECHFT_PATCHES_DIR:-$here}"

if [ -f "$root/s3prl/hub.py" ]; then
    target=s3prl
elif [ -f "$root/fairseq/__init__.py" ]; then
    target=fairseq
elif [ -f "$root/hub.py" ] && [ -d "$root/upstream" ]; then
    die "$root is s3prl's package folder; give the checkout root above it: $(cd "$root/.." && pwd)"
else
    die "$root: not an s3prl source root (no s3prl/hub.py) nor a fairseq one (no fairseq/__init__.py)"
fi

shopt -s nullglob
patches=("$base/$target"/*.patch)
shopt -u nullglob
if [ "${#patches[@]}" -eq 0 ]; then
    echo "apply.sh: no patches for $target in $base/$target: nothing to do"
    exit 0
fi
if [ "$reverse" -eq 1 ]; then  # undo last first
    reversed=()
    for ((i = ${#patches[@]} - 1; i >= 0; i--)); do reversed+=("${patches[$i]}"); done
    patches=("${reversed[@]}")
fi

PATCH=(patch -p1 -f -s --no-backup-if-mismatch --reject-file=-)

# state DIR PATCHFILE -> "applied", "unapplied" or "conflict"
state() {
    if "${PATCH[@]}" --dry-run -R -d "$1" -i "$2" >/dev/null 2>&1; then
        echo applied
    elif "${PATCH[@]}" --dry-run -d "$1" -i "$2" >/dev/null 2>&1; then
        echo unapplied
    else
        echo conflict
    fi
}

# The files the patches touch (paths after -p1), for the scratch copy.
touched() {
    sed -n -e 's/^--- \([^\t]*\).*/\1/p' -e 's/^+++ \([^\t]*\).*/\1/p' "$@" \
        | grep -v '^/dev/null$' | sed 's|^[^/]*/||' | sort -u
}

scratch="$(mktemp -d "${TMPDIR:-/tmp}/speechft-patches.XXXXXX")" || die "cannot make a scratch folder"
trap 'rm -rf "$scratch"' EXIT
while IFS= read -r file; do
    if [ -e "$root/$file" ]; then
        mkdir -p "$scratch/$(dirname "$file")"
        cp -p "$root/$file" "$scratch/$file"
    fi
done < <(touched "${patches[@]}")

# Pass 1, on the scratch copy: decide what each patch does, in order.
conflicts=0
todo=()
report=()
for p in "${patches[@]}"; do
    name="$target/$(basename "$p")"
    s="$(state "$scratch" "$p")"
    if [ "$s" = conflict ]; then
        conflicts=$((conflicts + 1))
        flag=""
        [ "$reverse" -eq 1 ] && flag="-R"
        echo "$name: CONFLICT$([ "$reverse" -eq 1 ] && echo " (cannot be reversed)")"
        patch -p1 -f --no-backup-if-mismatch --reject-file=- --dry-run $flag -d "$scratch" -i "$p" 2>&1 \
            | head -20 | sed 's/^/    /'
        continue
    fi
    if [ "$reverse" -eq 0 ] && [ "$s" = unapplied ]; then
        todo+=("$p"); verb="applies"; done_verb="applied"
        "${PATCH[@]}" -d "$scratch" -i "$p" >/dev/null 2>&1
    elif [ "$reverse" -eq 1 ] && [ "$s" = applied ]; then
        todo+=("$p"); verb="reverses"; done_verb="reversed"
        "${PATCH[@]}" -R -d "$scratch" -i "$p" >/dev/null 2>&1
    elif [ "$reverse" -eq 0 ]; then
        verb="already applied"; done_verb="already applied, skipped"
    else
        verb="not applied"; done_verb="not applied, skipped"
    fi
    if [ "$check" -eq 1 ]; then
        echo "$name: $verb"
    else
        report+=("$name: $done_verb")
    fi
done

if [ "$conflicts" -gt 0 ]; then
    [ "$check" -eq 1 ] || echo "apply.sh: $conflicts patch(es) conflict; $root was not changed" >&2
    exit 1
fi
[ "$check" -eq 1 ] && exit 0

# Pass 2: the same patches on ROOT.
for p in "${todo[@]}"; do
    if [ "$reverse" -eq 0 ]; then
        "${PATCH[@]}" -d "$root" -i "$p" || die "$(basename "$p") failed on $root after a clean trial run"
    else
        "${PATCH[@]}" -R -d "$root" -i "$p" || die "$(basename "$p") failed to reverse on $root after a clean trial run"
    fi
done
printf '%s\n' "${report[@]}"
exit 0
