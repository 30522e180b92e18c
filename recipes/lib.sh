# Helpers for recipes/run.sh: stage gating, per-step done-markers, timing. Sourced, not run.
# Expects: stage, stop_stage, exp, log_file.

_stage_times=()
_stage_current=
_stage_start=0

log() { echo "$(date '+%F %T') $*" | tee -a "$log_file" >&2; }

# begin_stage N "what: input -> output": true when N is inside [stage, stop_stage] and, if the recipe lists its
# stages ($recipe_stages), one of them.
begin_stage() {
  if [ "$1" -lt "$stage" ] || [ "$1" -gt "$stop_stage" ]; then return 1; fi
  if [ -n "${recipe_stages:-}" ] && [[ " $recipe_stages " != *" $1 "* ]]; then return 1; fi
  _stage_current=$1
  _stage_start=$(date +%s)
  log "Stage $1: $2"
}

end_stage() {
  wait_background
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

# background CMD...: with parallel_jobs > 1 (a recipe's setting, for CPUs), queue CMD (a step, or a function of
# steps that must follow each other); once parallel_jobs are queued, or at wait_background (also called by end_stage),
# the queued commands run at once, each process on one CPU thread, and the recipe stops after a failure once the
# others have finished. A command left alone keeps the machine's threads. Small models train faster two at a time on
# one thread each than one after the other on two threads (benchmarks/bench_parallel_steps.py).
_background_queue=()
background() {
  if [ "${parallel_jobs:-1}" -le 1 ]; then "$@"; return; fi
  _background_queue+=("$(printf '%q ' "$@")")
  if [ ${#_background_queue[@]} -ge "$parallel_jobs" ]; then wait_background; fi
}

wait_background() {
  local command pid pids=() failed=0 together=${#_background_queue[@]}
  for command in "${_background_queue[@]}"; do
    ( if [ "$together" -gt 1 ]; then export OMP_NUM_THREADS=1; fi; eval "$command" ) &
    pids+=($!)
  done
  _background_queue=()
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ $failed -ne 0 ]; then log "  a step failed (its error is above); the steps beside it finished"; exit 1; fi
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

# A retrieval model of $retrieval_models is its config's name, optionally with another text encoder after a colon
# and another seed after an @: "cnn14" (conf/retrieval_cnn14.yaml), "cnn14:roberta" (the same config with RoBERTa),
# "cnn14@1" (the same config from seed 1), trained into $exp/retrieval_<tag> with tag "cnn14", "cnn14_roberta" or
# "cnn14_seed1".
retrieval_tag() { local tag=${1/:/_}; echo "${tag/@/_seed}"; }

# retrieval_model_args MODEL: sets model_args, the config and overrides that train MODEL; a recipe adds its starting
# weights by defining starting_weights MODEL (which appends to model_args).
retrieval_model_args() {
  local spec=${1%@*}
  model_args=(--config "$conf/retrieval_${spec%%:*}.yaml")
  if [[ $spec == *:* ]]; then model_args+=(--model.text_encoder.name "${spec#*:}"); fi
  if [[ $1 == *@* ]]; then model_args+=(--seed "${1##*@}"); fi
  if declare -F starting_weights > /dev/null; then starting_weights "$1"; fi
}

# checkpoints_of KIND SPEC: the comma-separated checkpoints of a named system's members ("cnn14,ast" -> the
# retrieval models' best.pt, KIND retrieval; "transformer,gru" -> the SCST captioners' averaged.pt, KIND caption).
checkpoints_of() {
  local member out=
  for member in ${2//,/ }; do
    if [ "$1" = retrieval ]; then out+="$exp/retrieval_$(retrieval_tag "$member")/best.pt,"
    else out+="$exp/caption_${member}_scst/averaged.pt,"; fi
  done
  echo "${out%,}"
}
