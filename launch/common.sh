# shellcheck shell=bash
# Helpers shared by the launch scripts: print or run a command, quoted exactly as it would run.
DRY_RUN=${DRY_RUN:-0}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

die() {
  echo "error: $*" >&2
  exit 2
}

quote_args() {
  local out="" arg
  for arg in "$@"; do out+="$(printf '%q' "$arg") "; done
  printf '%s' "${out% }"
}
