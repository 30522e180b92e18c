# The built-in synthetic corpus: generated from a seed, so the whole recipe runs offline on a CPU.
train_split=development
val_split=validation
eval_split=evaluation
n_clips=${SYNTH_CLIPS:-800}
# development 420, validation 80, evaluation 300 clips. Training cost follows the development size; a large
# evaluation split is what makes the table readable: with 90 clips the 95% interval of a CIDEr-D difference between
# two systems was about +-0.05, enough to rank them wrongly.
shares=0.525,0.1,0.375
seed=0
# steps of a stage that do not depend on each other (two retrieval models, two captioners, decoding and scoring) run
# two at a time, one CPU thread each: the main job's wall time on 2 cores (recipes/lib.sh, background)
parallel_jobs=${PARALLEL_JOBS:-2}
retrieval_models="cnn10 cnn6"   # conf/retrieval_<name>.yaml; their ensemble is evaluated in stage 3
feature_model=cnn10              # whose frozen audio encoder writes the feature stores
caption_models="transformer gru" # conf/caption_<name>_xe.yaml; their SCST models are ensembled in stage 8
beam_size=3
lm=${SYNTH_LM:-smollm2}           # the LLM captioners' LM (stages 10-13): an alias, a model folder or a .gguf file
lm_models="lora pengi"           # conf/caption_lm_<name>.yaml
lm_member_seeds=${SYNTH_LM_MEMBER_SEEDS:-2}  # LoRA members on caption_lm_lora's mapping, merged with it (one
# member, so that stages 10-13 take about 45 min on 2 cores)
lm_member_epochs=1

# Stage 0 of the paper's pipeline: each retrieval CNN starts from its tagger pre-trained on generated scenes and
# shipped with the project (train.audio_init in its config; tagging/checkpoints/README.md), as the SJTU system starts
# from PANNs; stage 24 reproduces them
pretrained_encoders="cnn10 cnn6"  # conf/pretrain_<name>.yaml -> tagging/checkpoints/<name>_synth.pt

prepare_corpus_stage() {
  step synth python -m corpus.synth --out "$data/raw" --n-clips "$n_clips" --shares "$shares" --seed "$seed"
}

prepare_manifest_stage() {
  step manifests python -m corpus.prepare synth --root "$data/raw" --out "$data"
}

# CLAP's keyword-to-caption (stages 14-16): a second synthetic corpus (another seed, clips named labelled_*) used by
# its labels only; its captions are written from the labels by the template and by the LM.
labelled_clips=${SYNTH_LABELLED_CLIPS:-400}  # development 320 of them
labelled_seed=7

# Long audio (stages 17-19): a third synthetic corpus whose clips last 30 to 90 s (development 180 of them), each
# scene's sounds spread over it; retrieval trained on random 10-s crops against CLAP's feature fusion.
long_clips=${SYNTH_LONG_CLIPS:-300}
long_seed=11
long_durations=30,90
