"""Audio in, features out: reading audio, front ends, audio encoders, weights, the HDF5 store, extraction.

Corpora (the synthetic one, Clotho, AudioCaps) are made and prepared by the ``corpus`` package.

- ``features.audio``: ``load_audio``, ``probe``, ``AudioError`` (reading, validation, resampling)
- ``features.manifest``: ``Manifest``, ``read_manifest``, ``write_manifest`` (the per-split corpus format)
- ``features.frontend``: the log-mel front end (STFT and mel modules of ``features.melbank``, torchlibrosa's
  without librosa) and SpecAugment
- ``features.kaldi``: ``fbank``, ``FbankConfig``: a batched Kaldi filterbank in torch (the front end of AST and BEATs)
- ``features.encoders``: ``build_audio_encoder`` and the registry ``AUDIO_ENCODERS`` (cnn14, cnn10, cnn6,
  wavegram_logmel_cnn14, ast, beats)
- ``features.weights``: ``load_audio_encoder``, ``save_audio_encoder``, ``checkpoint_sha256``; ``CHUNK_SECONDS`` and
  ``chunked_spec``, the one place where the window for long audio is chosen (at load time)
- ``features.encode``: ``plan_batches``, ``encode_waveforms`` (batching and encoding shared by extraction,
  inference and search)
- ``features.store``: ``open_store``, ``create_store`` (the HDF5 feature store)
- ``features.parts``: the plan, part files and ``merge`` of a resumable extraction
- ``features.extract``: ``python -m features.extract`` (resumable, shardable extraction)

Submodules are imported where used, so that light commands don't pay for torch or transformers.
"""
__all__ = ["audio", "manifest", "frontend", "kaldi", "encoders", "weights", "encode", "store", "parts", "extract"]
