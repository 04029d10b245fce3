#!/usr/bin/env bash
# book/check.sh: checks the metcd book and builds it, for `just test`.
#
# The book promises that it cannot drift from the code or from the results:
# code is included from source files by anchor, plots and tables come from the
# committed reference run. mdbook itself only logs a missing include and never
# notices a missing anchor, image or link, so this script checks each promise
# and fails with a message that names the chapter and the broken reference.
#
# It never writes into the repository: the book is copied into a temporary
# staging tree that mirrors the repository through symlinks, and built there.
#
# Usage: bash book/check.sh            (from any directory)
#   METCD_BOOK_RESULTS=/path/to/run    check against another run directory
#                                      laid out like results/reference
#   METCD_BOOK_KEEP=1                  keep the staging tree and print its path
set -uo pipefail

BOOK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BOOK_DIR/.." && pwd)
# Resolved before the cd below, so a relative METCD_BOOK_RESULTS means
# relative to where the script was started.
RESULTS=$(realpath -m "${METCD_BOOK_RESULTS:-$ROOT/results/reference}")
cd "$BOOK_DIR" || exit 2
export PATH="$PATH:$HOME/.cargo/bin"

MIN_WORDS=150
WORKLOADS=(read-heavy write-heavy)
ENGINES=(memory redb sled rocksdb fjall bitcask)
PLOTS=(latency throughput timeline percentiles)

passed=0
failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
    shift
    for line in "$@"; do printf '        %s\n' "$line"; done
}

# Chapters in SUMMARY.md order: every "(path.md)" link target.
mapfile -t CHAPTERS < <(grep -oE '\]\([^)]+\.md\)' src/SUMMARY.md | sed -E 's/^\]\((.*)\)$/\1/')

# Prose of a chapter without fenced code blocks, for word counts and the
# forbidden-word scan (code included from the source is checked elsewhere).
prose_of() { awk '/^[[:space:]]*(```|~~~)/ { fenced = !fenced; next } !fenced' "$1"; }

# ---------------------------------------------------------------- tools
if command -v mdbook >/dev/null 2>&1; then
    pass "mdbook found: $(mdbook --version)"
else
    fail "mdbook not found" "install it with: cargo install --locked mdbook"
    printf 'book: %d passed, %d failed\n' "$passed" "$failed"
    exit 1
fi

# ---------------------------------------------------------------- book.toml
problems=()
grep -qE '^title = "metcd: storage engines and replicated state machines, measured"' book.toml ||
    problems+=("book.toml: the [book] title is not the agreed one")
awk '/^\[build\]/ { inb = 1; next } /^\[/ { inb = 0 } inb && /^create-missing[[:space:]]*=[[:space:]]*false/ { found = 1 } END { exit !found }' book.toml ||
    problems+=("book.toml: [build] create-missing = false is missing")
if ((${#problems[@]})); then fail "book.toml" "${problems[@]}"; else pass "book.toml: title and create-missing = false"; fi

# ---------------------------------------------------------------- chapters exist and are substantive
problems=()
for chapter in "${CHAPTERS[@]}"; do
    if [[ ! -f "src/$chapter" ]]; then
        problems+=("src/$chapter is listed in SUMMARY.md but does not exist")
        continue
    fi
    words=$(prose_of "src/$chapter" | wc -w)
    if ((words < MIN_WORDS)); then
        problems+=("src/$chapter has $words words of prose; a chapter needs at least $MIN_WORDS")
    fi
done
if ((${#CHAPTERS[@]} == 0)); then problems+=("SUMMARY.md lists no chapters"); fi
if ((${#problems[@]})); then fail "chapters listed in SUMMARY.md" "${problems[@]}"; else pass "chapters: all ${#CHAPTERS[@]} listed in SUMMARY.md exist with at least $MIN_WORDS words"; fi

# ---------------------------------------------------------------- no orphan chapters
problems=()
while IFS= read -r file; do
    rel=${file#src/}
    [[ "$rel" == SUMMARY.md || "$rel" == results/* ]] && continue
    printf '%s\n' "${CHAPTERS[@]}" | grep -qxF "$rel" || problems+=("src/$rel is not listed in SUMMARY.md")
done < <(find src -name '*.md' -not -path 'src/results/*' | sort)
if ((${#problems[@]})); then fail "orphan chapters" "${problems[@]}"; else pass "no chapter file outside SUMMARY.md"; fi

# ---------------------------------------------------------------- forbidden words
problems=()
for chapter in "${CHAPTERS[@]}"; do
    [[ -f "src/$chapter" ]] || continue
    while IFS= read -r hit; do
        problems+=("src/$chapter:$hit")
    done < <(prose_of "src/$chapter" | grep -nE '\bTODO\b|\bTBD\b|[Pp]laceholder|[Cc]oming soon|FIXME|XXX' || true)
done
if ((${#problems[@]})); then fail "unfinished text (TODO, TBD, placeholder, coming soon, FIXME)" "${problems[@]}"; else pass "no TODO, TBD, placeholder or coming soon in any chapter"; fi

# ---------------------------------------------------------------- labs
# Every lab in labs/ is taught by a chapter that gives its grading command,
# every chapter of Part IV ends with a graded lab, and every command a
# chapter gives names a lab that exists.
problems=()
LABS_DIR="$ROOT/labs"
lab_names=()
for d in "$LABS_DIR"/*/; do
    name=$(basename "$d")
    if [[ -f "$d/grade.sh" ]]; then
        lab_names+=("$name")
        grep -rqE "just lab $name\b" src --include='*.md' || problems+=("labs/$name has no chapter that says 'just lab $name'")
    fi
done
for chapter in "${CHAPTERS[@]}"; do
    [[ "$chapter" == practice/* && -f "src/$chapter" ]] || continue
    grep -qE 'just lab [a-z0-9-]+' "src/$chapter" || problems+=("src/$chapter (Part IV) names no graded lab ('just lab NAME')")
done
while IFS= read -r hit; do
    name=${hit##*just lab }
    [[ -f "$LABS_DIR/$name/grade.sh" ]] || problems+=("a chapter says 'just lab $name', but labs/$name/grade.sh does not exist")
done < <(grep -rhoE 'just lab [a-z0-9-]+' src --include='*.md' | sort -u)
breaks=$(grep -oE '^    [a-z-]+\)' "$LABS_DIR/break/run.sh" 2>/dev/null | tr -d ' )' | sort -u)
for b in $breaks; do
    grep -rqE "lab-break $b\b|\`$b\`" src/raft/break-it.md || problems+=("labs/break/run.sh knows '$b', but the Break it chapter does not teach it")
done
if ((${#problems[@]})); then fail "labs" "${problems[@]}"; else pass "labs: ${#lab_names[@]} graded labs each taught by a chapter, every Part IV chapter ends with one, break-it labs: $(echo $breaks | tr '\n' ' ')"; fi

# ---------------------------------------------------------------- path helpers
# An include path is relative to the chapter's directory. Results files are
# resolved against $RESULTS so that a different run can be checked.
resolve() { # chapter path -> absolute path in the repository (or $RESULTS)
    local chapter_dir=$1 path=$2 abs
    abs=$(realpath -m "$BOOK_DIR/src/$chapter_dir/$path")
    if [[ "$abs" == "$ROOT/results/reference" || "$abs" == "$ROOT/results/reference/"* ]]; then
        abs="$RESULTS${abs#"$ROOT/results/reference"}"
    fi
    printf '%s\n' "$abs"
}
# Whether an absolute path points into the run under test.
in_results() { [[ "$1" == "$RESULTS" || "$1" == "$RESULTS/"* || "$1" == "$ROOT/results/"* ]]; }

# ---------------------------------------------------------------- the reference run
results_present=1
problems=()
if [[ ! -d "$RESULTS" ]]; then
    results_present=0
    problems+=("$RESULTS does not exist yet: the book shows the committed reference run;"
        "produce it with \`just bench-reference\` (the default suite, written to results/reference),"
        "or set METCD_BOOK_RESULTS=<run dir> to check the book against another run")
else
    expected=(index.md machine.json)
    for w in "${WORKLOADS[@]}"; do
        expected+=("$w/summary.md")
        for p in "${PLOTS[@]}"; do expected+=("$w/$p.svg"); done
        for e in "${ENGINES[@]}"; do expected+=("$w/$e.json"); done
    done
    for f in "${expected[@]}"; do
        [[ -s "$RESULTS/$f" ]] || problems+=("reference run file missing or empty: ${RESULTS#"$ROOT/"}/$f")
    done
fi
link=$(readlink src/results/reference || true)
[[ "$link" == "../../../results/reference" ]] ||
    problems+=("src/results/reference must be a symlink to ../../../results/reference (it is '${link:-not a symlink}'), so mdbook copies the plots into the book")
if ((${#problems[@]})); then fail "reference run layout" "${problems[@]}"; else pass "reference run: ${#expected[@]} files in ${RESULTS#"$ROOT/"} and the src/results/reference symlink"; fi

# ---------------------------------------------------------------- includes: files and anchors
problems=()
include_count=0
deferred=0
anchor_list=()
for chapter in "${CHAPTERS[@]}"; do
    [[ -f "src/$chapter" ]] || continue
    dir=$(dirname "$chapter")
    while IFS= read -r directive; do
        include_count=$((include_count + 1))
        spec=$(sed -E 's/^\{\{#(include|rustdoc_include)[[:space:]]+//; s/[[:space:]]*\}\}$//' <<<"$directive")
        path=${spec%%:*}
        anchor=""
        [[ "$spec" == *:* ]] && anchor=${spec#*:}
        file=$(resolve "$dir" "$path")
        if ((results_present == 0)) && in_results "$file"; then
            deferred=$((deferred + 1))
            continue
        fi
        if [[ ! -f "$file" ]]; then
            problems+=("src/$chapter: $directive names a missing file ($file)")
            continue
        fi
        if [[ -z "$anchor" ]]; then
            [[ -s "$file" ]] || problems+=("src/$chapter: $directive includes an empty file")
            continue
        fi
        if [[ "$anchor" =~ ^[0-9:]+$ ]]; then
            # Line numbers drift with edits, so source code is included by
            # anchor only. The one exception: a generated report in results/
            # (summary.md, mvcc.md, ...) is included from line 2, to leave out its title (a level-1
            # heading that would sit badly inside a chapter); that is only
            # right while line 1 really is that title, which is checked.
            if in_results "$file" && [[ "$anchor" == "2:" && "$file" == *.md ]]; then
                head -n 1 "$file" | grep -qE '^# ' ||
                    problems+=("src/$chapter: $directive skips line 1 of ${file#"$ROOT/"}, but that line is not a '# ' title: include the whole file instead")
                continue
            fi
            problems+=("src/$chapter: $directive includes by line numbers, which drift; wrap the code in ANCHOR: / ANCHOR_END: comments and include the anchor")
            continue
        fi
        anchor_list+=("${file#"$ROOT/"}:$anchor")
        body=$(awk -v a="$anchor" '
            $0 ~ "ANCHOR_END:[[:space:]]*" a "([^A-Za-z0-9_]|$)" { if (inside) { closed = 1; inside = 0 } next }
            $0 ~ "ANCHOR:[[:space:]]*" a "([^A-Za-z0-9_]|$)" { inside = 1; opened = 1; next }
            inside && $0 !~ /ANCHOR(_END)?:/ { lines++ }
            END { if (!opened) print "missing"; else if (!closed) print "unclosed"; else if (lines == 0) print "empty"; else print "ok" }
        ' "$file")
        case "$body" in
        ok) ;;
        missing) problems+=("src/$chapter: anchor '$anchor' not found in ${file#"$ROOT/"} (expected '// ANCHOR: $anchor' ... '// ANCHOR_END: $anchor')") ;;
        unclosed) problems+=("src/$chapter: anchor '$anchor' in ${file#"$ROOT/"} has no ANCHOR_END: $anchor") ;;
        empty) problems+=("src/$chapter: anchor '$anchor' in ${file#"$ROOT/"} wraps no code") ;;
        esac
    done < <(grep -oE '\{\{#(include|rustdoc_include)[[:space:]]+[^}]+\}\}' "src/$chapter" || true)
done
not_checked() { ((deferred)) && printf ' (%d into the missing reference run not checked)' "$deferred"; }
if ((${#problems[@]})); then
    fail "includes ($include_count directives)" "${problems[@]}"
else
    pass "includes: $((include_count - deferred)) of $include_count resolve$(not_checked); anchors: $(printf '%s ' "${anchor_list[@]}" | sed 's/ $//')"
fi

# ---------------------------------------------------------------- links and images
# Every relative link or image target in a chapter must exist: results files
# (through the symlink), other chapters, or hand-drawn SVGs under src/.
problems=()
link_count=0
deferred=0
for chapter in "${CHAPTERS[@]}"; do
    [[ -f "src/$chapter" ]] || continue
    dir=$(dirname "$chapter")
    while IFS= read -r target; do
        target=${target%%#*}
        [[ -z "$target" ]] && continue
        [[ "$target" =~ ^[a-z]+: ]] && continue # http:, https:, mailto:
        link_count=$((link_count + 1))
        file=$(resolve "$dir" "$target")
        if [[ "$file" == "$ROOT/book/src/results/reference"* ]]; then
            file="$RESULTS${file#"$ROOT/book/src/results/reference"}"
        fi
        if ((results_present == 0)) && in_results "$file"; then
            deferred=$((deferred + 1))
            continue
        fi
        [[ -e "$file" ]] || problems+=("src/$chapter links to $target, which does not exist ($file)")
    done < <(
        {
            grep -oE '\]\([^) ]+' "src/$chapter" | sed -E 's/^\]\(//'
            grep -oE '(src|href)="[^"]+"' "src/$chapter" | sed -E 's/^(src|href)="//; s/"$//'
        } || true
    )
done
if ((${#problems[@]})); then
    fail "links and images ($link_count relative targets)" "${problems[@]}"
else
    pass "links and images: $((link_count - deferred)) of $link_count relative targets exist$(not_checked)"
fi

# ---------------------------------------------------------------- build
stage=$(mktemp -d "${TMPDIR:-/tmp}/metcd-book.XXXXXX")
if [[ -n "${METCD_BOOK_KEEP:-}" ]]; then
    echo "      staging tree kept in $stage"
else
    trap 'rm -rf "$stage"' EXIT
fi
# Mirror the repository: every top-level entry but book/ and results/ as a
# symlink, the book as a copy, the results as the run under test.
for entry in "$ROOT"/* "$ROOT"/.[!.]*; do
    name=$(basename "$entry")
    [[ -e "$entry" && "$name" != book && "$name" != results && "$name" != .git ]] || continue
    ln -s "$entry" "$stage/$name"
done
mkdir -p "$stage/book" "$stage/results"
cp book.toml "$stage/book/"
cp -a src "$stage/book/src"
# Other committed runs (the cluster's, the fault harness's) are shown as they
# are; only the reference run can be swapped with METCD_BOOK_RESULTS.
for run in "$ROOT"/results/*; do
    [[ -d "$run" && "$(basename "$run")" != reference ]] && ln -s "$run" "$stage/results/$(basename "$run")"
done
if ((results_present)); then
    ln -s "$RESULTS" "$stage/results/reference"
else
    rm -f "$stage/book/src/results/reference"
fi
log="$stage/mdbook.log"
mdbook build "$stage/book" -d "$stage/out" >"$log" 2>&1
status=$?
# Without a reference run the build can only complain about it; that is
# reported once above, so those lines (and the "Caused By" lines that follow
# them without naming a path) are not counted again here.
mapfile -t complaints < <(
    grep -E '^[[:space:]]*(WARN|ERROR)\b|\b(warning|error):' "$log" | {
        if ((results_present)); then
            cat
        else
            grep -v 'results/reference' | grep -vE 'Caused By: (failed to read|No such file or directory)'
        fi
    } || true
)
if ((status != 0 && results_present)) || ((${#complaints[@]})); then
    fail "mdbook build (exit $status)" "${complaints[@]:-see $log}"
else
    pass "mdbook build: no warnings or errors$( ((results_present)) || echo ' (apart from the missing reference run)')"
fi

# ---------------------------------------------------------------- built output
problems=()
if [[ -d "$stage/out" ]]; then
    for chapter in "${CHAPTERS[@]}"; do
        html="$stage/out/${chapter%.md}.html"
        [[ -s "$html" ]] || problems+=("no HTML page for src/$chapter")
        # A numbered item right after a paragraph line (no blank line) is
        # swallowed by the paragraph and shows up as literal "4. ..." text.
        while IFS= read -r line; do
            problems+=("src/$chapter: a numbered list item was rendered as text (put a blank line before it): ${line:0:60}")
        done < <(grep -E '^[0-9]+\. ' "$html" 2>/dev/null || true)
    done
    if ((results_present)); then
        while IFS= read -r svg; do
            [[ -s "$stage/out/$svg" ]] || problems+=("plot $svg was not copied into the built book")
        done < <(cd src && grep -rhoE 'results/reference/[A-Za-z0-9_./-]+\.svg' . | sort -u)
        tables=$(grep -o '<table>' "$stage/out/measuring/reference-run.html" 2>/dev/null | wc -l)
        ((tables >= ${#WORKLOADS[@]})) ||
            problems+=("the reference-run chapter renders $tables tables; expected one summary table per workload (${#WORKLOADS[@]})")
    fi
else
    problems+=("mdbook wrote no output")
fi
if ((${#problems[@]})); then fail "built book" "${problems[@]}"; else pass "built book: a page per chapter$( ((results_present)) && echo ', plots copied, tables rendered')"; fi

printf 'book: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
