"""Start-up costs every command pays, each way in fresh processes, interleaved, medians:

1. ``python -m <command> --help`` answered from the command's source (``common.cli.help_from_source``) vs by
   importing the command as a run does (``AACTK_HELP_FROM_SOURCE=0``), for every command;
2. a PANNs CNN's front end (STFT + mel bank) built by ``features.melbank`` vs torchlibrosa's modules (which import
   ``librosa.filters``), after ``import torch`` in both.

    python benchmarks/bench_startup.py [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from timing import REPO, interleaved_medians

sys.path.insert(0, str(REPO))
from tests.common.test_help import COMMANDS  # noqa: E402 - every command module that answers --help from source

FRONT_ENDS = {
    "features.melbank": "from features.frontend import build_extractors, panns_mel_config; "
                        "build_extractors(panns_mel_config())",
    "torchlibrosa": "from torchlibrosa.stft import LogmelFilterBank, Spectrogram; "
                    "Spectrogram(n_fft=1024, hop_length=320, win_length=1024, window='hann', center=False); "
                    "LogmelFilterBank(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0, amin=1e-10, "
                    "top_db=None)",
}


def _process(args: list[str], env: dict[str, str] | None = None):
    return lambda: subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, check=True,
                                  env={**os.environ, **(env or {})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    print(f"python -m <command> --help, median of {runs} fresh processes (seconds)")
    print(f"{'command':<24} {'from source':>11} {'imported':>9} {'ratio':>6}")
    for command in COMMANDS:
        fast, full = interleaved_medians([_process(["-m", command, "--help"], {"AACTK_HELP_FROM_SOURCE": "1"}),
                                          _process(["-m", command, "--help"], {"AACTK_HELP_FROM_SOURCE": "0"})],
                                         runs=runs, warmup=1)
        print(f"{command:<24} {fast:>11.2f} {full:>9.2f} {full / fast:>5.1f}x")
    torch_alone, ours, reference = interleaved_medians(
        [_process(["-c", f"import torch; {code}"]) for code in ("pass", *FRONT_ENDS.values())], runs=runs, warmup=1)
    print(f"\nCNN front end built in a fresh process after `import torch` ({torch_alone:.2f} s alone), median of {runs}:")
    print(f"features.melbank {ours - torch_alone:.2f} s, torchlibrosa {reference - torch_alone:.2f} s "
          f"({(reference - torch_alone) / max(ours - torch_alone, 1e-3):.1f}x)")


if __name__ == "__main__":
    main()
