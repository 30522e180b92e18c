# Clotho v2.1 as the SJTU DCASE 2022 report trains on it. Nothing is downloaded: get the archives yourself (Clotho
# v2.1, DOI 10.5281/zenodo.4783391), unpack them so that one folder holds clotho_audio_<split>/ and
# clotho_captions_<split>.csv, and point CLOTHO_ROOT there.
# Development and validation are merged and re-split 9:1 (seeded; $data/resplit.json lists the clips), as the report
# does; CLOTHO_RESPLIT=none keeps Clotho's own splits. The AudioCaps -> Clotho schedule: run recipes/audiocaps first
# (its retrieval models land in exp/audiocaps; PRETRAIN_EXP moves it), and each retrieval model here is fine-tuned
# from its AudioCaps twin at 2e-5 (recipes/local/sjtu_report.sh); official PANNs / AST weights: PANNS_DIR, AST_DIR.
# Captioning pre-training on MACS, as the report: MACS_YAML (MACS.yaml) and MACS_AUDIO (the TAU Urban Acoustic Scenes
# 2019 development audio folder) make stage 1 prepare it, stage 4 extract its features and stage 5 train each
# captioner on MACS first (its vocabulary holding Clotho's words too), then fine-tune it on Clotho.
train_split=development
val_split=validation
eval_split=evaluation
clotho_root=${CLOTHO_ROOT:-downloads/clotho}
clotho_resplit=${CLOTHO_RESPLIT:-0.9}
pretrain_exp=${PRETRAIN_EXP:-exp/audiocaps}
macs_yaml=${MACS_YAML:-}
macs_audio=${MACS_AUDIO:-}
if [ -n "$macs_yaml" ]; then caption_pretrain=$data/macs/train; fi
. recipes/local/sjtu_report.sh  # the report's models, named ensembles and starting weights
lm=${LM:-smollm2}                # the LLM captioners' LM (stages 10-13): e.g. Llama-3-8B-Instruct's folder
lm_models="lora pengi"           # conf/caption_lm_<name>.yaml
lm_member_seeds="2 3 4 5"        # four LoRA members on caption_lm_lora's mapping: five models merged, as the report
lm_member_epochs=10

prepare_corpus_stage() {
  local split missing=0
  for split in $train_split $val_split $eval_split; do
    for need in "$clotho_root/clotho_audio_$split" "$clotho_root/clotho_captions_$split.csv"; do
      [ -e "$need" ] || { log "  missing $need"; missing=1; }
    done
  done
  if [ $missing -ne 0 ]; then
    log "  Clotho v2.1 is not at CLOTHO_ROOT=$clotho_root: download and unpack it there (see recipes/clotho/settings.sh)"
    exit 1
  fi
  mkdir -p "$data"
  ln -sfn "$(cd "$clotho_root" && pwd)" "$data/raw"
}

prepare_manifest_stage() {
  local resplit=()
  [ "$clotho_resplit" = none ] || resplit=(--resplit "$clotho_resplit" --seed 0)
  step manifests python -m corpus.prepare clotho --root "$data/raw" --out "$data" \
    --splits "$train_split,$val_split,$eval_split" "${resplit[@]}"
  if [ -n "$macs_yaml" ]; then
    step manifests_macs python -m corpus.prepare macs --yaml "$macs_yaml" --audio-dir "${macs_audio:?set MACS_AUDIO}" \
      --out "$data/macs"
  fi
}
