# Helpers for recipes/run.sh: stage gating, per-step done-markers, timing. Sourced, not run.
# Expects: stage, stop_stage, exp, log_file.

_stage_times=()
_stage_current=
_stage_start=0

log() { echo "$(date '+%F %T') $*" | tee -a "$log_file" >&2; }

# begin_stage N "what: input -> output": true when N is inside [stage, stop_stage].
begin_stage() {
  if [ "$1" -lt "$stage" ] || [ "$1" -gt "$stop_stage" ]; then return 1; fi
  _stage_current=$1
  _stage_start=$(date +%s)
  log "Stage $1: $2"
}

end_stage() {
  local seconds=$(( $(date +%s) - _stage_start ))
  _stage_times+=("stage $_stage_current: ${seconds}s")
  log "Stage $_stage_current: done in ${seconds}s"
}

print_times() {
  [ ${#_stage_times[@]} -gt 0 ] || return 0
  local joined
  joined=$(printf '%s, ' "${_stage_times[@]}")
  log "Stage times: ${joined%, }"
}

# step NAME CMD...: run CMD unless it already finished with the same command and the same config files.
# Its signature (the command line and the content of every .yaml file it names) is kept in $exp/.done/NAME.
step() {
  local name=$1; shift
  local marker=$exp/.done/$name signature arg
  signature=$(printf '%q ' "$@")
  for arg in "$@"; do
    if [[ $arg == *.yaml && -f $arg ]]; then signature+=$'\n'"$arg: $(sha256sum < "$arg" | cut -d' ' -f1)"; fi
  done
  if [ -f "$marker" ]; then
    if [ "$(cat "$marker")" == "$signature" ]; then
      log "  $name: already done, skipped"
      return 0
    fi
    log "  $name: its outputs in $exp were made by a different command or configuration:"
    diff <(cat "$marker") <(echo "$signature") | sed 's/^/    /' | tee -a "$log_file" >&2 || true
    log "  refusing to mix them; use another --exp, or delete $marker and that step's outputs"
    exit 1
  fi
  log "  $name: $*"
  "$@"
  mkdir -p "$exp/.done"
  printf '%s' "$signature" > "$marker.tmp" && mv "$marker.tmp" "$marker"
}
