# AudioCaps: the caption CSVs (train.csv, val.csv, test.csv: audiocap_id,youtube_id,start_time,caption) in
# AUDIOCAPS_CSV and the clips you downloaded in AUDIOCAPS_AUDIO (named <youtube_id>.wav, Y<youtube_id>.wav,
# <youtube_id>_<start>.wav, ...; absent clips are counted in missing.csv, not fatal). Nothing is downloaded.
# Its retrieval models are the pre-training half of the AudioCaps -> Clotho schedule (see recipes/clotho).
train_split=train
val_split=val
eval_split=test
audiocaps_csv=${AUDIOCAPS_CSV:-downloads/audiocaps/csv}
audiocaps_audio=${AUDIOCAPS_AUDIO:-downloads/audiocaps/audio}
. recipes/local/sjtu_report.sh  # the report's models, named ensembles and starting weights
lm=${LM:-smollm2}                # the LLM captioners' LM (stages 10-13): e.g. Llama-3-8B-Instruct's folder
lm_models="lora pengi"           # conf/caption_lm_<name>.yaml
lm_member_seeds="2 3 4 5"        # four LoRA members on caption_lm_lora's mapping: five models merged, as the report
lm_member_epochs=10

prepare_corpus_stage() {
  local need
  for need in "$audiocaps_csv" "$audiocaps_audio"; do
    [ -d "$need" ] || { log "  AudioCaps folder $need not found: set AUDIOCAPS_CSV and AUDIOCAPS_AUDIO"; exit 1; }
  done
}

prepare_manifest_stage() {
  step manifests python -m corpus.prepare audiocaps --csv-dir "$audiocaps_csv" --audio-dir "$audiocaps_audio" \
    --out "$data" --splits "$train_split,$val_split,$eval_split"
}
