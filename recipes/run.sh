#!/usr/bin/env bash
# From a raw corpus to scored captions, Kaldi-style: numbered stages, each a `python -m <package>.<command>` call.
#
#   bash recipes/run.sh [--corpus synth|clotho|audiocaps] [--stage N] [--stop_stage M] [--data DIR] [--exp DIR]
#                       [--conf DIR (default recipes/<corpus>/conf)]
#
# Stages: 0 corpus (generate the built-in one, or check a downloaded one), 1 manifests, 2 retrieval training,
# 3 retrieval evaluation (each model and the ensemble), 4 feature extraction with the frozen stage-1 audio encoder,
# 5 captioner cross-entropy training, 6 SCST, 7 decoding and scoring of single models, 8 ensemble decoding and
# scoring, 9 results table. The LLM captioners, beside the main job (which stops at 9): 10 the LM ready offline
# (converted once), 11 prefix-LM captioners (LoRA, and Pengi's frozen LM) on captions and, where the corpus has them
# (qa.json), its questions, 12 LoRA members on the LoRA model's mapping merged by concatenation, 13 decoding, scoring,
# question answering (closed set, and open: answers the LM writes), classification by prompt (labels.json; beside
# zero-shot retrieval) and the results table again: bash recipes/run.sh --stage 10 --stop_stage 13 (about 45 min). CLAP's keyword-to-caption (synth): 14 a label-only corpus
# and its captions from labels (template, LM), 15 retrieval trained with them, 16 zero-shot and retrieval compared.
# Long audio (synth): 17 a corpus of 30-90-s clips, 18 retrieval trained on random 10-s crops and with CLAP's feature
# fusion, 19 each evaluated (the crop model on a central crop, on window averages, whole) and compared.
# The SJTU report's claims (bash recipes/run.sh --corpus synth_claims: stages 0-9 on a larger corpus, then 20-22):
# 20 claim 1: captioning features of the shipped pretrained tagger (frozen), of the retrieval model fine-tuned from
# it and of an untrained encoder, two seeds each, a GRU captioner on each, 21 retrieval pre-trained on a second corpus of another character and fine-tuned on this one,
# 22 claims.md: every claim's figures, 95% paired intervals and verdict.
# Serving: 23 the SCST ensemble as one caption bundle and an index of the evaluation audio, for python -m serve.
# Pre-training: 24 the audio encoders shipped in tagging/checkpoints, reproduced from generated scenes and checked
# (bash recipes/run.sh --stage 24 --stop_stage 24; about 35 min each on 2 cores).
# The corpus's own settings (splits, configs, models) live in recipes/<corpus>/settings.sh, its configs in
# recipes/<corpus>/conf/. Every step records what it ran in <exp>/.done/: a finished step is skipped, and a
# step whose command or config changed since is refused (use another --exp, or delete the old outputs).
# Killed in any stage, the same command resumes: training and extraction pick up where they stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

corpus=synth
stage=0
stop_stage=
data=
exp=
conf=
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus) corpus=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop_stage|--stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --conf) conf=$2; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
recipe=recipes/$corpus
[ -f "$recipe/settings.sh" ] || { echo "run.sh: no recipe for corpus '$corpus' ($recipe/settings.sh)" >&2; exit 2; }
data=${data:-data/$corpus}
exp=${exp:-exp/$corpus}
# shellcheck source=/dev/null
. "$recipe/settings.sh"
conf=${conf:-${recipe_conf:-$recipe/conf}}  # a recipe may use another's configs (synth_claims: synth's)
stop_stage=${stop_stage:-${recipe_stop_stage:-9}}  # a recipe may end elsewhere by default (synth_claims: 22)
. recipes/lib.sh
mkdir -p "$data" "$exp"
log_file=$exp/run.log
echo "$(date '+%F %T') run.sh --corpus $corpus --stage $stage --stop_stage $stop_stage --data $data --exp $exp" >> "$log_file"

if begin_stage 0 "corpus: $corpus -> $data/raw"; then
  prepare_corpus_stage
  end_stage
fi

if begin_stage 1 "manifests: $data/raw -> $data/{$train_split,$val_split,$eval_split}"; then
  prepare_manifest_stage
  end_stage
fi

if begin_stage 2 "retrieval training: $data/$train_split -> $exp/retrieval_{${retrieval_models// /,}}"; then
  for model in $retrieval_models; do
    retrieval_model_args "$model"
    tag=$(retrieval_tag "$model")
    background step "retrieval_train_$tag" python -m retrieval.train "${model_args[@]}" \
      --data.train_manifest "$data/$train_split" --data.val_manifest "$data/$val_split" --exp_dir "$exp/retrieval_$tag"
  done
  end_stage
fi

retrieval_ckpts=$(checkpoints_of retrieval "${retrieval_models// /,}")
if begin_stage 3 "retrieval evaluation, each model and their ensemble: $data/$eval_split -> $exp/retrieval_eval.json"; then
  systems=
  for system in ${retrieval_systems:-}; do  # named ensembles (name=member,member), each with its DCASE submission
    systems+="${system%%=*}=$(checkpoints_of retrieval "${system#*=}") "
  done
  # one pass: every model embeds the split once, for the ensemble of all, each model alone and each named system
  step retrieval_eval python -m retrieval.evaluate --checkpoints "$retrieval_ckpts" --manifest "$data/$eval_split" \
    --out "$exp/retrieval_eval.json" ${systems:+--systems "$systems" --systems_dir "$exp/retrieval_systems"}
  end_stage
fi

encoder_ckpt=$exp/retrieval_$feature_model/audio_encoder.pt  # the best model's audio encoder alone
if begin_stage 4 "features: $data/* + $encoder_ckpt -> $exp/features/*.h5"; then
  for split in $train_split $val_split $eval_split; do
    background step "extract_$split" python -m features.extract --manifest "$data/$split" --checkpoint "$encoder_ckpt" \
      --out "$exp/features/$split.h5"
  done
  if [ -n "${caption_pretrain:-}" ]; then  # a corpus the captioners are pre-trained on (clotho: MACS)
    background step extract_caption_pretrain python -m features.extract --manifest "$caption_pretrain" \
      --checkpoint "$encoder_ckpt" --out "$exp/features/caption_pretrain.h5"
  fi
  end_stage
fi

caption_val=(--data.val_features "$exp/features/$val_split.h5" --data.val_captions "$data/$val_split")
caption_data=(--data.train_features "$exp/features/$train_split.h5" --data.train_captions "$data/$train_split"
              "${caption_val[@]}")
caption_xe() {  # caption_xe NAME: cross-entropy here; with $caption_pretrain, on that corpus first, then fine-tuned
  local name=$1 init=()
  if [ -n "${caption_pretrain:-}" ]; then  # its vocabulary also holds this corpus's words, for the fine-tuning
    step "caption_pretrain_$name" python -m captioning.train --config "$conf/caption_${name}_xe.yaml" \
      --data.train_features "$exp/features/caption_pretrain.h5" --data.train_captions "$caption_pretrain" \
      "${caption_val[@]}" --data.vocab_captions "$data/$train_split" --exp_dir "$exp/caption_${name}_pretrain"
    init=(--train.init "$exp/caption_${name}_pretrain/averaged.pt")
  fi
  step "caption_xe_$name" python -m captioning.train --config "$conf/caption_${name}_xe.yaml" "${caption_data[@]}" \
    "${init[@]}" --exp_dir "$exp/caption_${name}_xe"
}
if begin_stage 5 "captioner cross-entropy: $exp/features -> $exp/caption_{${caption_models// /,}}_xe"; then
  for name in $caption_models; do
    background caption_xe "$name"
  done
  end_stage
fi

if begin_stage 6 "SCST: $exp/caption_*_xe/averaged.pt -> $exp/caption_{${caption_models// /,}}_scst"; then
  for name in $caption_models; do
    background step "caption_scst_$name" python -m captioning.train --config "$conf/caption_scst.yaml" \
      "${caption_data[@]}" --train.init "$exp/caption_${name}_xe/averaged.pt" --exp_dir "$exp/caption_${name}_scst"
  done
  end_stage
fi

results_table() {  # $exp/results.md; with the main job's evaluation split, its references' mean length too
  local refs=()
  if [ -f "$data/$eval_split/wav.csv" ]; then refs=(--references "$data/$eval_split"); fi
  python recipes/local/results.py --exp "$exp" --out "$exp/results.md" "${refs[@]}"
}
score() {  # score <name>[.<variant>]...: caption metrics of $exp/decode/<name>/predictions[.<variant>].json on the
  # evaluation split, all systems in one process (METEOR's Java and the sentence model started once, the references
  # embedded once)
  local name variant predictions=() outs=()
  for name in "$@"; do
    variant=
    [[ $name == *.* ]] && variant=.${name#*.} name=${name%%.*}
    predictions+=("$exp/decode/$name/predictions$variant.json")
    outs+=("$exp/decode/$name/scores$variant.json")
  done
  step "score_$(IFS=+; echo "$*")" python -m eval.captions --predictions "$(IFS=,; echo "${predictions[*]}")" \
    --references "$data/$eval_split/captions.json" --out "$(IFS=,; echo "${outs[*]}")" \
    ${score_metrics:+--metrics "$score_metrics"}
}
decode() {  # decode <name> <checkpoints> [features folder]: beam search predictions (JSON, DCASE CSV), evaluation split,
  # the length normalisation chosen on the validation split (recorded in predictions.decoding.json); on the stage-1
  # encoder's features, the final beams re-ranked by the stage-1 retrieval model's audio-text similarity, its weight
  # chosen with the norm; the variants from the same beams (plain beam search, no re-ranking) beside them
  local features=${3:-$exp/features} rerank=()
  [ -z "${3:-}" ] && rerank=(--rerank "$exp/retrieval_$feature_model/best.pt")
  step "decode_$1" python -m captioning.decode --checkpoints "$2" --features "$features/$eval_split.h5" \
    --out "$exp/decode/$1/predictions.json" --csv "$exp/decode/$1/submission.csv" --beam_size "$beam_size" \
    --length_norm auto --val_features "$features/$val_split.h5" --val_references "$data/$val_split" \
    "${rerank[@]}" --variants true
}
variants() {  # variants <name>...: each name and the decoding variants written beside it, for score
  local name variant
  for name in "$@"; do
    echo "$name"
    for variant in plain no_rerank; do
      if [ -f "$exp/decode/$name/predictions.$variant.json" ]; then echo "$name.$variant"; fi
    done
  done
}
nearest_neighbour() {  # the baseline: each evaluation clip gets a caption of its nearest training clip
  step decode_nearest_neighbour python -m captioning.baseline --features "$exp/features/$eval_split.h5" \
    --train_features "$exp/features/$train_split.h5" --train_captions "$data/$train_split" \
    --out "$exp/decode/nearest_neighbour/predictions.json" --csv "$exp/decode/nearest_neighbour/submission.csv"
}
if begin_stage 7 "decode and score single models and the nearest-neighbour baseline: -> $exp/decode/*/scores.json"; then
  background nearest_neighbour
  systems=(nearest_neighbour)
  for name in $caption_models; do
    for mode in xe scst; do
      background decode "${name}_$mode" "$exp/caption_${name}_$mode/averaged.pt"
      systems+=("${name}_$mode")
    done
  done
  wait_background
  score $(variants "${systems[@]}")
  end_stage
fi

if begin_stage 8 "decode and score the ensemble(s): $exp/caption_*_scst -> $exp/decode/ensemble_scst/scores.json"; then
  background decode ensemble_scst "$(checkpoints_of caption "${caption_models// /,}")"
  systems=(ensemble_scst)
  for system in ${caption_systems:-}; do  # named ensembles
    background decode "${system%%=*}" "$(checkpoints_of caption "${system#*=}")"
    systems+=("${system%%=*}")
  done
  wait_background
  score $(variants "${systems[@]}")
  end_stage
fi

if begin_stage 9 "results: $exp -> $exp/results.md"; then
  results_table
  end_stage
fi

# --- the LLM captioners (stages 10-13) ----------------------------------------------------------------------------
lm_tasks=(--model.lm "${lm:-smollm2}")
# The LM captioners are used as their training ends (the cosine schedule's last step, last.pt): their per-epoch
# validation decodes 20 clips, a learning curve too noisy to choose an epoch by (a recipe's settings may say best.pt)
lm_checkpoint=${lm_checkpoint:-last.pt}
if [ -f "$data/$train_split/qa.json" ]; then  # questions as a second task (the synthetic corpus writes them)
  lm_tasks+=(--data.train_qa "$data/$train_split" --data.val_qa "$data/$val_split")
fi
if begin_stage 10 "LM: ${lm:-smollm2} -> a local model folder (a GGUF model is converted once, into the cache)"; then
  step lm_ready python -m common.lm "${lm:-smollm2}"
  end_stage
fi

if begin_stage 11 "prefix-LM captioners: $exp/features -> $exp/caption_lm_{${lm_models// /,}}"; then
  for name in $lm_models; do
    step "caption_lm_$name" python -m captioning.train_lm --config "$conf/caption_lm_$name.yaml" "${caption_data[@]}" \
      "${lm_tasks[@]}" --exp_dir "$exp/caption_lm_$name"
  done
  end_stage
fi

if begin_stage 12 "LoRA members on $exp/caption_lm_lora's mapping, merged: -> $exp/caption_lm_merged/merged.pt"; then
  members=$exp/caption_lm_lora/$lm_checkpoint
  for seed in $lm_member_seeds; do
    step "caption_lm_member$seed" python -m captioning.train_lm --config "$conf/caption_lm_lora.yaml" \
      "${caption_data[@]}" "${lm_tasks[@]}" --seed "$seed" --train.init "$exp/caption_lm_lora/$lm_checkpoint" \
      --train.freeze_mapping True --train.epochs "$lm_member_epochs" --exp_dir "$exp/caption_lm_member$seed"
    members+=,$exp/caption_lm_member$seed/$lm_checkpoint
  done
  step caption_lm_merge python -m captioning.merge_lora --checkpoints "$members" \
    --out "$exp/caption_lm_merged/merged.pt"
  end_stage
fi

answer() {  # answer <name> <checkpoint> [true]: answers to the evaluation questions, scored by type: chosen among the
  # training answers (closed set), or with true written by the LM (open ended, Pengi's framing) into qa/<name>_open
  local generate=${3:-false} name=$1${3:+_open}
  step "answer_$name" python -m captioning.answer --checkpoint "$2" --features "$exp/features/$eval_split.h5" \
    --qa "$data/$eval_split" --train_qa "$data/$train_split" --out "$exp/qa/$name/answers.json" --generate "$generate"
  step "score_qa_$name" python -m eval.qa --predictions "$exp/qa/$name/answers.json" --qa "$data/$eval_split" \
    --train_qa "$data/$train_split" --out "$exp/qa/$name/scores.json"
}
classify() {  # classify <name> <checkpoint>: each clip's labels ranked by the LM's likelihood after a prompt
  step "classify_$1" python -m captioning.classify --checkpoint "$2" --features "$exp/features/$eval_split.h5" \
    --truth "$data/$eval_split" --out "$exp/classify/$1"
}
tasks() {  # tasks <name> <checkpoint>: the other tasks the evaluation split has (closed-set questions; labels)
  if [ -f "$data/$eval_split/qa.json" ]; then answer "$1" "$2"; fi
  if [ -f "$data/$eval_split/labels.json" ]; then classify "$1" "$2"; fi
}
if begin_stage 13 "decode, score, answer and classify with the LM captioners: -> $exp/{decode,qa,classify}/lm_*"; then
  systems=()
  for name in $lm_models; do
    background decode "lm_$name" "$exp/caption_lm_$name/$lm_checkpoint"
    background tasks "lm_$name" "$exp/caption_lm_$name/$lm_checkpoint"
    systems+=("lm_$name")
  done
  for seed in $lm_member_seeds; do
    background decode "lm_member$seed" "$exp/caption_lm_member$seed/$lm_checkpoint"
    systems+=("lm_member$seed")
  done
  background decode lm_merged "$exp/caption_lm_merged/merged.pt"
  background tasks lm_merged "$exp/caption_lm_merged/merged.pt"
  if [ -f "$data/$eval_split/qa.json" ]; then  # open answers (Pengi's framing) from the merged model alone: as long
    background answer lm_merged "$exp/caption_lm_merged/merged.pt" true  # as its closed answers and labels together
  fi
  if [ -f "$data/$eval_split/labels.json" ]; then  # the same labels by zero-shot retrieval, for comparison
    background step classify_zero_shot python -m retrieval.zeroshot --checkpoints "$retrieval_ckpts" \
      --audio "$data/$eval_split" --out "$exp/classify/zero_shot_retrieval"
  fi
  wait_background
  score "${systems[@]}" lm_merged
  results_table
  end_stage
fi
# --- CLAP's keyword-to-caption (stages 14-16) ---------------------------------------------------------------------
if [ "$stop_stage" -ge 14 ] && [ -z "${labelled_clips:-}" ]; then
  echo "run.sh: stages 14-19 need the synthetic label-only and long-clip corpora, which only the synth recipe makes" \
    "(labelled_clips, long_clips)" >&2
  exit 2
fi
if begin_stage 14 "label-only corpus and its keyword captions: -> $data/labelled_{template,lm}/$train_split"; then
  step labelled_synth python -m corpus.synth --out "$data/labelled_raw" --n-clips "$labelled_clips" \
    --shares 0.8,0.1,0.1 --seed "$labelled_seed" --prefix labelled
  step labelled_manifests python -m corpus.prepare synth --root "$data/labelled_raw" --out "$data/labelled"
  background step keywords_template python -m corpus.keywords --manifest "$data/labelled/$train_split" \
    --out "$data/labelled_template"
  background step keywords_lm python -m corpus.keywords --manifest "$data/labelled/$train_split" \
    --out "$data/labelled_lm" --generator "${lm:-smollm2}"
  end_stage
fi

if begin_stage 15 "retrieval on captions + keyword captions: -> $exp/retrieval_keywords_{template,lm}"; then
  for kind in template lm; do
    background step "retrieval_train_keywords_$kind" python -m retrieval.train \
      --config "$conf/retrieval_$feature_model.yaml" --data.train_manifest "$data/$train_split,$data/labelled_$kind/$train_split" \
      --data.val_manifest "$data/$val_split" --exp_dir "$exp/retrieval_keywords_$kind"
  done
  end_stage
fi

if begin_stage 16 "zero-shot and retrieval: captions only, + template, + generated captions -> $exp/keywords/*"; then
  for kind in captions template lm; do
    ckpt=$exp/retrieval_keywords_$kind/best.pt
    [ "$kind" = captions ] && ckpt=$exp/retrieval_$feature_model/best.pt  # stage 2's model: the same config
    background step "zero_shot_$kind" python -m retrieval.zeroshot --checkpoints "$ckpt" \
      --audio "$data/$eval_split" --out "$exp/keywords/$kind"
    background step "retrieval_eval_keywords_$kind" python -m retrieval.evaluate --checkpoints "$ckpt" \
      --manifest "$data/$eval_split" --out "$exp/keywords/$kind/retrieval.json"
  done
  wait_background
  results_table
  end_stage
fi
# --- long audio (stages 17-19): CLAP's feature fusion against random crops and window averages -----------------------
if begin_stage 17 "long clips (${long_durations:-} s): -> $data/long/{$train_split,$val_split,$eval_split}"; then
  step long_synth python -m corpus.synth --out "$data/long_raw" --n-clips "$long_clips" --shares 0.6,0.1,0.3 \
    --seed "$long_seed" --prefix long --durations "$long_durations"
  step long_manifests python -m corpus.prepare synth --root "$data/long_raw" --out "$data/long"
  end_stage
fi

if begin_stage 18 "retrieval on long clips, random crops and feature fusion: -> $exp/retrieval_long_{crop,fusion}"; then
  for kind in crop fusion; do
    background step "retrieval_train_long_$kind" python -m retrieval.train \
      --config "$conf/retrieval_long_$kind.yaml" --data.train_manifest "$data/long/$train_split" --data.val_manifest "$data/long/$val_split" \
      --exp_dir "$exp/retrieval_long_$kind"
  done
  end_stage
fi

if begin_stage 19 "long clips seen as a crop, as windows, whole, or fused: -> $exp/long_audio/*.json"; then
  for how in crop windows whole; do
    background step "retrieval_eval_long_$how" python -m retrieval.evaluate \
      --checkpoints "$exp/retrieval_long_crop/best.pt" --manifest "$data/long/$eval_split" --long_audio "$how" --batch_size 4 --out "$exp/long_audio/$how.json"
  done
  background step retrieval_eval_long_fusion python -m retrieval.evaluate \
    --checkpoints "$exp/retrieval_long_fusion/best.pt" --manifest "$data/long/$eval_split" --batch_size 4 --out "$exp/long_audio/fusion.json"
  wait_background
  results_table
  end_stage
fi
# --- the SJTU report's claims (synth_claims: stages 20-22) ------------------------------------------------------------
claim1_encoder() {  # claim1_encoder pretrained|retrieval_seed<N>|untrained_seed<N>: that audio encoder's checkpoint
  case $1 in
    pretrained) echo "tagging/checkpoints/${feature_model}_synth.pt" ;;  # stage 0's tagger, frozen
    retrieval_seed0) echo "$encoder_ckpt" ;;                                 # stage 2's model: fine-tuned from it
    retrieval_seed*) echo "$exp/retrieval_${feature_model}_${1#retrieval_}/audio_encoder.pt" ;;  # stage 2's other seed
    untrained_seed*) echo "$exp/untrained_${feature_model}_${1#untrained_}/audio_encoder.pt" ;;
  esac
}
claim1_run() {  # claim1_run <encoder> <captioner seed>: the encoder's features, a GRU captioner (XE) on them, decoded
  # without re-ranking (the re-ranker is the retrieval model: it would favour its own features)
  local encoder=$1 seed=$2 split name=gru_xe_${1}_cap$2 features=$exp/features_$1
  if [ "$encoder" = retrieval_seed0 ] && [ "$seed" = "$(sed -n 's/^seed: *//p' "$conf/caption_gru_xe.yaml")" ]; then
    decode "$name" "$exp/caption_gru_xe/averaged.pt" "$exp/features"  # stage 5's captioner: the same run
    return
  fi
  if [[ $encoder == untrained_seed* ]]; then
    step "untrained_${encoder#untrained_}" python -m features.untrained --like "$encoder_ckpt" \
      --seed "${encoder#untrained_seed}" --manifest "$data/$train_split" --out "$(claim1_encoder "$encoder")"
  fi
  for split in $train_split $val_split $eval_split; do
    step "extract_${encoder}_$split" python -m features.extract --manifest "$data/$split" \
      --checkpoint "$(claim1_encoder "$encoder")" --out "$features/$split.h5"
  done
  step "caption_$name" python -m captioning.train --config "$conf/caption_gru_xe.yaml" --seed "$seed" \
    --data.train_features "$features/$train_split.h5" --data.train_captions "$data/$train_split" \
    --data.val_features "$features/$val_split.h5" --data.val_captions "$data/$val_split" --exp_dir "$exp/caption_$name"
  decode "$name" "$exp/caption_$name/averaged.pt" "$features"
}
if begin_stage 20 "claim 1: captioning features of the pretrained tagger (frozen), the retrieval model fine-tuned from it, an untrained encoder; two seeds each -> $exp/decode/gru_xe_*"; then
  # every run pairs an encoder draw with a captioner seed; the queue runs two at a time, a condition's features
  # extracted by its first run
  runs=(pretrained:1 retrieval_seed1:2 pretrained:2 untrained_seed0:1 untrained_seed1:2 retrieval_seed0:1)
  names=()
  for run in "${runs[@]}"; do
    background claim1_run "${run%%:*}" "${run#*:}"
    names+=("gru_xe_${run%%:*}_cap${run#*:}")
  done
  wait_background
  score "${names[@]}"
  end_stage
fi

pretrain_then_finetune() {  # retrieval on the source corpus, then fine-tuned here at the lower rates
  step retrieval_train_source python -m retrieval.train "${model_args[@]}" \
    --data.train_manifest "$data/source/$train_split" --data.val_manifest "$data/source/$val_split" \
    --exp_dir "$exp/retrieval_source_$feature_model"
  step retrieval_train_finetuned python -m retrieval.train "${model_args[@]}" \
    --train.init "$exp/retrieval_source_$feature_model/best.pt" --train.lr "$finetune_lr" \
    --train.text_lr "$finetune_text_lr" --data.train_manifest "$data/$train_split" \
    --data.val_manifest "$data/$val_split" --exp_dir "$exp/retrieval_finetuned_$feature_model"
}
if begin_stage 21 "retrieval pre-trained on a corpus of another character, fine-tuned here -> $exp/claims/*.json"; then
  step source_synth python -m corpus.synth --out "$data/source_raw" --n-clips "$source_clips" --shares 0.85,0.1,0.05 \
    --seed "$source_seed" --prefix source --max_events "$source_max_events" --favour "$source_favour"
  step source_manifests python -m corpus.prepare synth --root "$data/source_raw" --out "$data/source"
  retrieval_model_args "$feature_model"
  # the control: trained here alone for as many steps as pre-training and fine-tuning together (every epoch sees
  # each (clip, caption) pair once, so the epochs scale with the pairs of the two training splits)
  long_epochs=$(python - "$conf/retrieval_$feature_model.yaml" "$data/source/$train_split" "$data/$train_split" <<'EOF'
import json, sys, yaml
epochs = yaml.safe_load(open(sys.argv[1]))["train"]["epochs"]
source, target = (sum(map(len, json.load(open(f"{d}/captions.json")).values())) for d in sys.argv[2:])
print(round(epochs * (1 + source / target)))
EOF
)
  background pretrain_then_finetune
  background step retrieval_train_target_long python -m retrieval.train "${model_args[@]}" --train.epochs "$long_epochs" \
    --data.train_manifest "$data/$train_split" --data.val_manifest "$data/$val_split" \
    --exp_dir "$exp/retrieval_target_long_$feature_model"
  wait_background
  systems= ckpts=
  for model in target target_long source finetuned; do
    ckpt=$exp/retrieval_${model}_$feature_model/best.pt
    [ "$model" = target ] && ckpt=$exp/retrieval_$feature_model/best.pt  # stage 2's model: trained here alone
    systems+="retrieval_$model=$ckpt " ckpts+="$ckpt,"
  done
  step retrieval_eval_claims python -m retrieval.evaluate --checkpoints "${ckpts%,}" --manifest "$data/$eval_split" \
    --systems "$systems" --systems_dir "$exp/claims"
  end_stage
fi

if begin_stage 22 "the claims: $exp -> $exp/claims.md"; then
  python recipes/local/claims.py --exp "$exp" --feature_model "$feature_model" --out "$exp/claims.md"
  end_stage
fi

# --- serving (stage 23) ---------------------------------------------------------------------------------------------
if begin_stage 23 "for the server: the SCST ensemble as one bundle, the evaluation audio indexed -> $exp/serve"; then
  # the folder of the evaluation clips (the index holds a folder's files), from the split's manifest
  eval_audio=$(python -c 'import csv, os, sys; print(os.path.dirname(next(csv.DictReader(open(sys.argv[1])))["path"]))' \
    "$data/$eval_split/wav.csv")
  # the ensemble's decoding as stage 8 chose it on the validation split: its length norm and re-ranking weight
  read -r length_norm rerank_weight < <(python -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(r["length_norm"], r.get("rerank_weight", 0.0))' "$exp/decode/ensemble_scst/predictions.decoding.json")
  step serve_bundle python -m captioning.bundle --audio-encoder "$encoder_ckpt" \
    --captioners "$(checkpoints_of caption "${caption_models// /,}")" --out "$exp/serve/caption_bundle.pt" \
    --beam_size "$beam_size" --length_norm "$length_norm" --rerank "$exp/retrieval_$feature_model/best.pt" \
    --rerank_weight "$rerank_weight"
  step serve_index python -m retrieval.index build --folder "$eval_audio" --checkpoints "$retrieval_ckpts" \
    --captions "$data/$eval_split" --out "$exp/serve/index.h5"  # each file shown with its first caption
  echo "serve them: python -m serve --bundle $exp/serve/caption_bundle.pt --index $exp/serve/index.h5"
  end_stage
fi

if begin_stage 24 "pre-training (stage 0 of the paper's pipeline): generated scenes -> $exp/pretrain_*, checked against tagging/checkpoints"; then
  for model in ${pretrained_encoders:-}; do
    step "pretrain_$model" python -m tagging.train --config "$conf/pretrain_$model.yaml" --exp_dir "$exp/pretrain_$model"
    python -m tagging.pretrained --check "$exp/pretrain_$model/audio_encoder.pt" --like "${model}_synth.pt"
  done
  end_stage
fi
print_times
