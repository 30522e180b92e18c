# The SJTU report's claims on the built-in corpus: bash recipes/run.sh --corpus synth_claims (stages 0-9, then 20-22;
# about an hour on 2 CPU cores). The main job's recipe (synth's configs) on a corpus whose evaluation split is large
# enough to rank systems, plus what the claims compare: retrieval CNN10s and CNN6s from two seeds, the shipped
# pretrained tagger and untrained encoders from two seeds as feature extractors (claim 1: GRU captioners from two
# seeds on each), and a second corpus of another character to pre-train retrieval on.
# Writes $exp/claims.md (recipes/local/claims.py) beside the usual results.md.
. recipes/synth/settings.sh
recipe_conf=recipes/synth/conf
recipe_stages="0 1 2 3 4 5 6 7 8 9 20 21 22"
recipe_stop_stage=22
score_metrics=bleu,rouge_l,cider_d  # what the claims need (CIDEr-D) and a little context, without minutes of Java
n_clips=${CLAIMS_CLIPS:-1400}
# development 420 clips (the main job's training cost), validation 80, evaluation 900 (+-0.02 CIDEr-D intervals)
shares=0.3,0.0572,0.6428
# claim 3: two architectures from two seeds each; ensembles of the same architecture against ensembles of different
# ones, every model once on each side (a lucky seed helps both sides), all evaluated by stage 3 in one pass
retrieval_models="cnn10 cnn10@1 cnn6 cnn6@1"
retrieval_systems="same_cnn10=cnn10,cnn10@1 same_cnn6=cnn6,cnn6@1 mixed_1=cnn10,cnn6@1 mixed_2=cnn10@1,cnn6"
# claim 4: a source corpus of another character (at most 2 sound events per clip, half the sound types 4x as
# frequent, another seed), retrieval pre-trained on it and fine-tuned on this corpus at a fifth of the peak rates;
# against the target-only model and a target-only model trained for as many steps as both together
source_clips=${CLAIMS_SOURCE_CLIPS:-600}
source_seed=21
source_max_events=2
source_favour=babble,bird,dog,engine,rain,siren,wind
finetune_lr=1.0e-3
finetune_text_lr=1.0e-5
