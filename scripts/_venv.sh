# Sourced by the scripts in this folder (from the project root): `ensure_installed SPEC` creates .venv when it is
# missing and installs the project into it (`pip install -e SPEC`, SPEC "." or ".[dev]") only when that was never
# done for the pyproject.toml of today. The stamp file .venv/install-stamp keeps one line "SPEC HASH" per install
# (HASH: pyproject.toml's SHA-256 and the Python version); a change of pyproject.toml makes every line stale.
# A failed install writes no stamp, so the next run tries again. Delete .venv to start afresh.

ensure_installed() {
  local spec=$1 stamp=.venv/install-stamp hash
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  hash=$(.venv/bin/python -c 'import hashlib, sys
print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest() + "-py" + sys.version.split()[0])')
  if [ -f "$stamp" ] && grep -qxF -- "$spec $hash" "$stamp"; then
    return 0
  fi
  echo "installing the project into .venv (pip install -e '$spec'; log in .venv/install.log)" >&2
  if ! .venv/bin/python -m pip install --disable-pip-version-check -e "$spec" >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "installing the project failed (log above)" >&2
    return 1
  fi
  { grep -F -- " $hash" "$stamp" 2>/dev/null || true; echo "$spec $hash"; } >"$stamp.new"
  mv "$stamp.new" "$stamp"
}
