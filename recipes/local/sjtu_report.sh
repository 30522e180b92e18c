# The SJTU DCASE 2022 report's models and ensembles, shared by recipes/clotho and recipes/audiocaps (sourced by their
# settings.sh).
# Retrieval: the report's audio encoders (CNN14, Wavegram-Logmel-CNN14, AST) with BERT-base, and CNN14 with its
# other text encoders (BERT-medium, RoBERTa-base). Named ensembles, each evaluated with its DCASE submission CSV:
# system1 a single CNN14-BERT; system2 one audio encoder, three text encoders; system3 three audio encoders, one text
# encoder; system4 all five. (The report's own system numbering could not be checked here; the members are what the
# report describes ensembling.)
retrieval_models="cnn14 cnn14:bert_medium cnn14:roberta wavegram_logmel_cnn14 ast"
retrieval_systems="system1=cnn14 system2=cnn14,cnn14:bert_medium,cnn14:roberta
  system3=cnn14,wavegram_logmel_cnn14,ast system4=cnn14,cnn14:bert_medium,cnn14:roberta,wavegram_logmel_cnn14,ast"
feature_model=cnn14  # captioning reads the frozen audio encoder of the CNN14-BERT retrieval model
# Captioning: BiGRU encoder with a Transformer or GRU decoder, XE then SCST; named ensembles of the SCST models.
caption_models="transformer gru"
caption_systems="system1=transformer system2=gru system3=transformer,gru"
beam_size=3

# starting_weights MODEL (see retrieval_model_args in recipes/lib.sh): the weights a retrieval model of the Clotho
# and AudioCaps recipes starts from, appended to model_args. Nothing is downloaded: each source is used when present.
#   1. $pretrain_exp/retrieval_<tag>/best.pt (the same model trained on AudioCaps): fine-tuned at $finetune_lr;
#   2. else the official audio weights: PANNS_DIR holding Cnn14_mAP=0.431.pth / Wavegram_Logmel_Cnn14_mAP=0.439.pth,
#      AST_DIR a transformers AST folder (e.g. MIT/ast-finetuned-audioset-10-10-0.4593 saved locally);
#   3. else random audio weights (a warning in the log: the report's numbers need 1 or 2).
panns_dir=${PANNS_DIR:-}
ast_dir=${AST_DIR:-}
finetune_lr=2.0e-5  # the report's fine-tuning peak (pre-training: 1e-4, in the configs)

starting_weights() {
  local tag file
  tag=$(retrieval_tag "$1")
  if [ -n "${pretrain_exp:-}" ] && [ -f "$pretrain_exp/retrieval_$tag/best.pt" ]; then
    model_args+=(--train.init "$pretrain_exp/retrieval_$tag/best.pt" --train.lr "$finetune_lr"
                 --train.text_lr "$finetune_lr")
    return
  fi
  case ${1%%:*} in
    cnn14) file=Cnn14_mAP=0.431.pth ;;
    wavegram_logmel_cnn14) file=Wavegram_Logmel_Cnn14_mAP=0.439.pth ;;
    ast)
      if [ -n "$ast_dir" ]; then model_args+=(--model.audio_encoder.args.pretrained "$ast_dir"); return; fi
      file= ;;
    *) return ;;
  esac
  if [ -n "$file" ] && [ -n "$panns_dir" ] && [ -f "$panns_dir/$file" ]; then
    model_args+=(--train.audio_init "$panns_dir/$file")
  else
    log "  warning: $1 starts from random audio weights (set PANNS_DIR or AST_DIR; see recipes/local/sjtu_report.sh)"
  fi
}
