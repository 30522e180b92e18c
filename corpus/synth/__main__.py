"""Command line: ``python -m corpus.synth --out DIR --n-clips N --seed S [--shares 0.7,0.15,0.15]
[--sample-rate 16000] [--workers 2] [--prefix synth] [--durations 30,90] [--max_events 3] [--favour dog,rain]``."""
from __future__ import annotations

from common.cli import help_from_source

help_from_source(__name__, __file__)  # --help from this file, before the imports below (torch takes seconds)

from .corpus import SPLIT_SHARES, make_corpus


def main(out: str, n_clips: int = 3000, seed: int = 0, shares: tuple[float, ...] = SPLIT_SHARES,
         sample_rate: int = 16000, workers: int = 2, prefix: str = "synth",
         durations: tuple[float, ...] | None = None, max_events: int = 3, favour: tuple[str, ...] = ()) -> None:
    """Generate the synthetic audio-caption corpus in Clotho's layout.

    Writes DIR/clotho_audio_{development,validation,evaluation}/synth_NNNNNN.wav (mono, 16-bit),
    DIR/clotho_captions_<split>.csv (file_name,caption_1..caption_5), DIR/synth_metadata_<split>.json (events,
    attributes, onsets per clip; `python -m corpus.prepare synth` makes each clip's questions and answers from
    it) and DIR/synth_compositional_evaluation.csv (evaluation clips holding an event-attribute or event-pair
    combination never seen in development). The same seed gives byte-identical files for any number of workers;
    rerunning with the same settings completes an interrupted run.

    Args:
        out: output folder (created if missing).
        n_clips: number of clips over all splits.
        seed: random seed of everything: scenes, audio, captions, splits and held-out combinations.
        shares: fractions of the clips in development, validation and evaluation (summing to 1).
        sample_rate: sample rate in Hz of the wav files (>= 16000).
        workers: processes rendering clips in parallel (1 renders in this process).
        prefix: the clips' file names, <prefix>_NNNNNN.wav (another prefix keeps the ids of a second corpus,
            e.g. a label-only one, apart from the first's when they train together).
        durations: min,max seconds of long clips (e.g. 30,90): each clip's sounds are spread over a length drawn
            between them, with silence and background between, for long-audio handling (feature fusion, windows).
            By default a clip lasts as long as its sounds (3 to 20 s).
        max_events: at most this many sound events per clip (1 to 3), for a corpus of another character.
        favour: event types (e.g. dog,rain) made 4 times as likely to occur as the others: another event mix.
    """
    s = make_corpus(out, n_clips, seed=seed, sample_rate=sample_rate, workers=workers, shares=shares,
                    prefix=prefix, durations=durations, max_events=max_events,
                    favour=(favour,) if isinstance(favour, str) else tuple(favour))
    clips = ", ".join(f"{k} {v}" for k, v in s["clips"].items())
    print(f"clips: {clips} ({s['compositional']} evaluation clips with unseen combinations)")
    print(f"audio: {s['duration_s'] / 3600:.2f} h; caption vocabulary: {s['vocabulary']} words; "
          f"time: {s['seconds']:.1f} s; written to {out}")


if __name__ == "__main__":  # guarded: worker processes import this module too
    from common.cli import run

    run(main, "corpus.synth")
