"""Prefix-LM captioner: audio frames -> a mapping network -> a prefix of LM input embeddings -> a causal LM.

The LM reads one sequence of input embeddings::

    [prompt text before the audio] [audio prefix: k slots] [prompt text after the audio, ending the turn] answer <eos>

The prompt is rendered with the LM's chat template where it has one (``prompt`` holds ``[audio]`` where the audio
goes, as in "Describe the following audio clip [audio]"; without it the audio comes first), so an instruction-tuned
LM sees a user turn and answers in the assistant turn. The loss is on the answer tokens and the end-of-sequence token
only. The LM is either frozen (Pengi) or adapted with LoRA through ``peft`` (the DCASE 2024 system: query and key
projections, rank 16, dropout 0.05); either way only the mapping network and the LoRA weights train, and only they
are in this module's ``state_dict`` (the LM comes from its own folder, checked by its identity).

Mapping networks (``mapping``):

- ``mlp``: a 2-layer MLP on every frame (GELU between), then mean pooling over the valid frames into ``prefix_length``
  slots (1: global mean pooling, as the DCASE 2024 report);
- ``transformer``: Pengi's / ClipCap's mapper: the clip's mean frame is projected to ``prefix_length`` vectors
  (or, with ``mapping_args: {per_frame: true}``, every frame is projected and given its position), which attend,
  with as many learnt constants, through a small transformer; the constants' outputs are the prefix.

Decoding follows the step contract of :mod:`captioning.search` (``prepare`` / ``init_state`` / ``step``), with the
LM's key/value cache as the state, so beam search, ensembles and every decoding command take this model as they
take the seq2seq captioners. The "bos" token that starts decoding is the prompt's last token.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.models.transformer import sinusoid_positions
from common.tensor import lengths_to_mask, masked_mean

AUDIO_MARK = "[audio]"
MAPPINGS = ("mlp", "transformer")
LORA_DEFAULTS = {"r": 16, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "k_proj"]}


def pooled_slots(x: Tensor, lengths: Tensor, slots: int) -> Tensor:
    """Mean of each clip's valid frames in ``slots`` equal time segments: (B, T, H) -> (B, slots, H)."""
    if slots == 1:
        return masked_mean(x, lengths_to_mask(lengths, x.shape[1]), dim=1)[:, None]
    t = torch.arange(x.shape[1], device=x.device)
    segment = (t[None, :] * slots) // lengths.clamp(min=1)[:, None]  # (B, T): which slot each frame falls in
    onehot = F.one_hot(segment.clamp(max=slots), slots + 1)[..., :slots].to(x.dtype)  # padding -> no slot
    counts = onehot.sum(1).clamp(min=1)[..., None]  # (B, slots, 1)
    return onehot.transpose(1, 2) @ x / counts


class MlpMapping(nn.Module):
    def __init__(self, frame_dim: int, width: int, prefix_length: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or width
        self.net = nn.Sequential(nn.Linear(frame_dim, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.prefix_length = prefix_length

    def forward(self, frames: Tensor, lengths: Tensor) -> Tensor:
        return pooled_slots(self.net(frames), lengths, self.prefix_length)


class TransformerMapping(nn.Module):
    """Pengi's / ClipCap's mapper: learnt constants attend, through a small transformer, to the audio, and their
    outputs are the prefix. The audio is the clip's mean frame projected to ``prefix_length`` vectors (ClipCap), or
    with ``per_frame`` every valid frame projected (so the order of events within the clip reaches the LM)."""

    def __init__(self, frame_dim: int, width: int, prefix_length: int, layers: int = 2, heads: int = 8,
                 hidden: int | None = None, per_frame: bool = False) -> None:
        super().__init__()
        hidden = hidden or width
        self.prefix_length, self.per_frame = prefix_length, per_frame
        self.project = nn.Linear(frame_dim, hidden if per_frame else prefix_length * hidden)
        self.constants = nn.Parameter(torch.randn(prefix_length, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, width)

    def forward(self, frames: Tensor, lengths: Tensor) -> Tensor:
        valid = lengths_to_mask(lengths, frames.shape[1])  # (B, T)
        if self.per_frame:
            x = self.project(frames)  # (B, T, hidden): padded frames are masked out of the attention below
            x = x + sinusoid_positions(x.shape[1], x.shape[2], device=x.device).to(x.dtype)
            ignore = torch.cat([~valid, valid.new_zeros(valid.shape[0], self.prefix_length)], dim=1)
        else:
            x = self.project(masked_mean(frames, valid, dim=1)).view(frames.shape[0], self.prefix_length, -1)
            ignore = None
        x = torch.cat([x, self.constants.expand(frames.shape[0], -1, -1).to(x.dtype)], dim=1)
        return self.out(self.transformer(x, src_key_padding_mask=ignore)[:, -self.prefix_length:])


class PromptEncoder(nn.Module):
    """Pengi's text side: a frozen sentence encoder (mean-pooled ``transformers`` model, e.g. MiniLM) and a
    transformer mapper (m2) turn a prompt into ``prefix_length`` LM input embeddings; only the mapper trains."""

    def __init__(self, width: int, prefix_length: int, name: str = "minilm", **mapping_args: Any) -> None:
        super().__init__()
        from common.text_encoder import TextEncoder

        self.text = TextEncoder(name, pooling="mean", max_length=64).requires_grad_(False).eval()
        self.mapping = TransformerMapping(self.text.dim, width, prefix_length, **mapping_args)
        self._pooled: dict[str, Tensor] = {}  # prompt -> sentence embedding (the encoder is frozen)

    def train(self, mode: bool = True) -> "PromptEncoder":
        super().train(mode)
        self.text.eval()  # frozen: no dropout, in training too
        return self

    def forward(self, prompts: list[str]) -> Tensor:
        """B prompts -> (B, prefix_length, width)."""
        new = sorted({p for p in prompts if p not in self._pooled})
        if new:
            with torch.no_grad():
                pooled = self.text(**self.text.tokenize([p.replace(AUDIO_MARK, " ").strip() for p in new]))
            self._pooled.update(zip(new, pooled))
        pooled = torch.stack([self._pooled[p] for p in prompts])[:, None]  # (B, 1, D): one "frame" each
        return self.mapping(pooled, torch.ones(len(prompts), dtype=torch.long, device=pooled.device))


def prompt_pieces(tokenizer: Any, prompt: str, chat_template: bool, system_prompt: str | None = None
                  ) -> tuple[list[int], list[int]]:
    """Token ids before and after the audio prefix for ``prompt`` (chat template where asked and available), after
    ``system_prompt`` where given (None: the template's own, e.g. SmolLM2's 15-token introduction of itself)."""
    text = prompt if AUDIO_MARK in prompt else AUDIO_MARK + prompt
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    if chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(system + [{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    else:
        text = (tokenizer.bos_token or "") + (f"{system_prompt}\n" if system_prompt else "") + text + "\n"
    before, after = text.split(AUDIO_MARK, 1)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    return encode(before), encode(after)


class PrefixLMCaptioner(nn.Module):
    """Mapping network + causal LM (frozen or LoRA). ``forward(frames, frame_lengths, answers)``
    -> ``{"logits": (B, L, V)}`` for every answer position (the token to predict at position i is ``answers[:, i]``).

    Args:
        lm: a ``transformers`` causal LM (its weights are frozen here).
        tokenizer: its tokenizer.
        frame_dim: size of the audio frames.
        mapping: ``mlp`` or ``transformer`` (see the module docstring); ``mapping_args`` its extra arguments.
        prefix_length: audio prefix slots.
        prompt: the instruction, with ``[audio]`` where the audio goes.
        chat_template: render the prompt with the LM's chat template where it has one.
        system_prompt: the system turn before it (None: the template's default).
        lora: None (frozen LM) or LoRA settings (``r``, ``alpha``, ``dropout``, ``targets``).
        prompt_encoder: None, or a text encoder name (``minilm``) for Pengi's prompt prefix: ``prefix_length`` more
            slots after the audio's, from the prompt through the frozen encoder and a trained mapper (m2); the
            prompt's text tokens stay in the LM input too.
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, frame_dim: int, mapping: str = "mlp", prefix_length: int = 1,
                 prompt: str = "Describe the following audio clip " + AUDIO_MARK, chat_template: bool = True,
                 lora: Mapping[str, Any] | None = None, mapping_args: Mapping[str, Any] | None = None,
                 prompt_encoder: str | None = None, system_prompt: str | None = None) -> None:
        super().__init__()
        if mapping not in MAPPINGS:
            raise ValueError(f"Invalid mapping. (expected one of {MAPPINGS}, found {mapping!r})")
        if prefix_length < 1:
            raise ValueError(f"Invalid prefix_length. (expected >= 1, found {prefix_length})")
        lm.requires_grad_(False)
        width = lm.get_input_embeddings().embedding_dim
        maker = MlpMapping if mapping == "mlp" else TransformerMapping
        self.mapping = maker(frame_dim, width, prefix_length, **dict(mapping_args or {}))
        if prompt_encoder:
            extra = {k: v for k, v in dict(mapping_args or {}).items() if k in ("layers", "heads", "hidden")}
            self.prompt_encoder = PromptEncoder(width, prefix_length, prompt_encoder, **extra)
        if lora:
            from peft import LoraConfig, get_peft_model

            settings = {**LORA_DEFAULTS, **lora}
            lm = get_peft_model(lm, LoraConfig(r=settings["r"], lora_alpha=settings["alpha"],
                                               lora_dropout=settings["dropout"],
                                               target_modules=list(settings["targets"])))
        self.lm, self.tokenizer, self.chat_template = lm, tokenizer, chat_template
        self.system_prompt = system_prompt
        before, after = prompt_pieces(tokenizer, prompt, chat_template, system_prompt)
        if not after:
            raise ValueError(f"Invalid prompt {prompt!r}: nothing follows the audio, so nothing starts the answer")
        self._pieces = {prompt: (before, after)}  # prompt -> token ids before and after the audio
        self.prompt = prompt
        self.register_buffer("before_ids", torch.tensor(before, dtype=torch.long), persistent=False)
        self.eos = int(tokenizer.eos_token_id)
        self.bos = after[-1]  # decoding starts by feeding the prompt's last token
        self.pad = next(i for i in (tokenizer.pad_token_id, tokenizer.unk_token_id, 0, 1, 3)
                        if i is not None and i not in (self.eos, self.bos))

    @property
    def decoder(self) -> "PrefixLMCaptioner":
        """The step-wise decoding contract (as a seq2seq captioner's ``decoder``) lives here."""
        return self

    # -- what trains is what is saved --------------------------------------------------------------------------------
    def trained_keys(self) -> list[str]:
        """The weights this model learns (mapping networks, LoRA), whether or not a run freezes some of them."""
        return [name for name, _ in self.named_parameters()
                if name.startswith(("mapping.", "prompt_encoder.mapping.")) or ".lora_" in name]

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        """The mapping network's and LoRA's weights only (the frozen LM comes from its folder)."""
        full, trained = super().state_dict(*args, **kwargs), set(self.trained_keys())
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        return {k: v for k, v in full.items() if k.removeprefix(prefix) in trained}

    def load_state_dict(self, state: Mapping[str, Tensor], strict: bool = True,  # type: ignore[override]
                        assign: bool = False):
        expected, given = set(self.trained_keys()), set(state)
        if strict and expected != given:
            raise RuntimeError(f"trained weights do not fit: missing {sorted(expected - given)[:5]}, "
                               f"unexpected {sorted(given - expected)[:5]}")
        return super().load_state_dict(state, strict=False, assign=assign)

    # -- sequences ---------------------------------------------------------------------------------------------------
    def embed(self, ids: Tensor) -> Tensor:
        return self.lm.get_input_embeddings()(ids)

    def after_ids(self, prompt: str | None = None) -> list[int]:
        """Token ids of ``prompt`` (default: the model's) after the audio; its text before the audio must be the
        model's, which every row shares (so put ``[audio]`` first in per-example prompts, e.g. questions)."""
        prompt = self.prompt if prompt is None else prompt
        if prompt not in self._pieces:
            before, after = prompt_pieces(self.tokenizer, prompt, self.chat_template, self.system_prompt)
            if before != self.before_ids.tolist() or not after:
                raise ValueError(f"Invalid prompt {prompt!r}: the text before {AUDIO_MARK} must be the model's "
                                 f"prompt's ({self.prompt!r}), and some text must follow it")
            self._pieces[prompt] = (before, after)
        return self._pieces[prompt][1]

    def encode(self, frames: Tensor, frame_lengths: Tensor, prompts: list[str] | None = None) -> dict[str, Tensor]:
        """Frames (B, T, D) -> the per-clip part of the LM input, ``prefix`` (B, P, H), right-padded, and its
        ``prefix_lengths`` (B,): the audio slots and the prompt text after them (``prompts``: one per clip, default
        the model's; the text before the audio is the same for every clip: :meth:`_prompt_cache`)."""
        audio = self.mapping(frames, frame_lengths)  # (B, k, H)
        prompts = [self.prompt if p is None else p for p in (prompts or [None] * audio.shape[0])]
        after = [self.embed(torch.tensor(self.after_ids(p), device=audio.device)) for p in prompts]
        if hasattr(self, "prompt_encoder"):  # Pengi: the prompt's own prefix slots follow the audio's
            audio = torch.cat([audio, self.prompt_encoder(prompts).to(audio.dtype)], dim=1)
        rows = [torch.cat([a.to(t.dtype), t]) for a, t in zip(audio, after)]
        lengths = torch.tensor([len(r) for r in rows], device=audio.device)
        return {"prefix": nn.utils.rnn.pad_sequence(rows, batch_first=True), "prefix_lengths": lengths}

    def _prompt_cache(self, b: int) -> Any:
        """The LM's keys and values of the prompt text before the audio, computed once and shared by ``b`` rows
        (in training too: gradients reach LoRA through the shared rows)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        if len(self.before_ids):
            self.lm(inputs_embeds=self.embed(self.before_ids)[None], past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
            cache = DynamicCache([(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1))
                                  for layer in cache.layers])
        return cache

    def _continue(self, inputs: Tensor, cache: Any, logits_to_keep: int = 1) -> Tensor:
        """Run the LM on ``inputs`` (B, N, H) after what ``cache`` holds (which it extends) -> logits of the last
        ``logits_to_keep`` positions. No attention mask: rows are right-padded, and a position never sees later ones."""
        offset, (b, n) = cache.get_seq_length(), inputs.shape[:2]
        positions = torch.arange(offset, offset + n, device=inputs.device).expand(b, -1)
        return self.lm(inputs_embeds=inputs, past_key_values=cache, position_ids=positions, use_cache=True,
                       logits_to_keep=logits_to_keep).logits

    def forward(self, frames: Tensor, frame_lengths: Tensor, answers: Tensor, prompts: list[str] | None = None
                ) -> dict[str, Tensor]:
        """``answers`` (B, L): answer tokens then ``<eos>``, right-padded (no lengths needed: a padded position's
        logits are never read, and no valid position sees it); ``prompts`` one per clip (default: the model's)."""
        enc = self.encode(frames, frame_lengths, prompts)
        prefix, prefix_lengths = enc["prefix"], enc["prefix_lengths"].tolist()
        answer_embeddings = self.embed(answers[:, :-1])  # the last answer token predicts nothing
        cache, length = self._prompt_cache(prefix.shape[0]), answers.shape[1]
        if len(set(prefix_lengths)) == 1:  # one prompt length: only the answer positions need logits
            logits = self._continue(torch.cat([prefix, answer_embeddings], dim=1), cache, logits_to_keep=length)
            return {"logits": logits}  # (B, L, V): logits[:, i] predict answers[:, i]
        rows = [torch.cat([prefix[i, :n], answer_embeddings[i]]) for i, n in enumerate(prefix_lengths)]
        logits = self._continue(nn.utils.rnn.pad_sequence(rows, batch_first=True), cache, logits_to_keep=0)
        return {"logits": torch.stack([logits[i, n - 1:n - 1 + length] for i, n in enumerate(prefix_lengths)])}

    @torch.no_grad()
    def candidate_logprobs(self, frames: Tensor, frame_lengths: Tensor, prompts: list[str],
                           candidates: list[list[str]]) -> list[Tensor]:
        """log p(candidate, <eos> | audio, prompt) of each clip's candidates: B clips whose prompts have one token
        length -> B tensors (C_b,). Each clip's prompt is run once; its candidates continue from its keys/values."""
        enc = self.encode(frames, frame_lengths, prompts)
        if len(set(enc["prefix_lengths"].tolist())) > 1:
            raise ValueError("candidate_logprobs takes prompts of one token length; score each length apart")
        cache = self._prompt_cache(len(prompts))
        first = self._continue(enc["prefix"], cache)[:, -1].float().log_softmax(-1)  # (B, V): the first token
        owner = torch.tensor([b for b, options in enumerate(candidates) for _ in options], device=frames.device)
        ids = [torch.tensor(self.tokenizer(c, add_special_tokens=False)["input_ids"] + [self.eos], device="cpu")
               for options in candidates for c in options]  # host data: padded, then moved once
        tokens = nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=self.pad).to(frames.device)
        logp = first[owner].gather(1, tokens[:, :1])  # (R, 1)
        if tokens.shape[1] > 1:  # the rest of each candidate, after its clip's prompt
            from transformers import DynamicCache

            rows = DynamicCache([(layer.keys.index_select(0, owner), layer.values.index_select(0, owner))
                                 for layer in cache.layers])
            rest = self._continue(self.embed(tokens[:, :-1]), rows, logits_to_keep=tokens.shape[1] - 1)
            logp = torch.cat([logp, rest.float().log_softmax(-1).gather(2, tokens[:, 1:, None])[..., 0]], dim=1)
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < torch.tensor([len(i) for i in ids],
                                                                                          device=tokens.device)[:, None]
        return list((logp * valid).sum(1).split([len(options) for options in candidates]))

    # -- step-wise decoding ------------------------------------------------------------------------------------------
    def prepare(self, enc: dict[str, Tensor]) -> dict[str, Tensor]:
        if len(set(enc["prefix_lengths"].tolist())) > 1:
            raise ValueError("step-wise decoding takes clips whose prompts have one length; decode each length apart")
        return {"prefix": enc["prefix"][:, :-1]}  # the prompt's last token is fed as "bos"

    def init_state(self, ctx: dict[str, Tensor]) -> dict[str, Any]:
        cache = self._prompt_cache(ctx["prefix"].shape[0])
        self._continue(ctx["prefix"], cache)
        return {"kv": [[layer.keys, layer.values] for layer in cache.layers]}

    def step(self, ctx: dict[str, Tensor], state: dict[str, Any], tokens: Tensor) -> tuple[Tensor, dict[str, Any]]:
        from transformers import DynamicCache

        cache = DynamicCache([(k, v) for k, v in state["kv"]])
        logits = self._continue(self.embed(tokens[:, None]), cache)
        return logits[:, -1], {"kv": [[layer.keys, layer.values] for layer in cache.layers]}


class LMVocabulary:
    """What decoding needs of a vocabulary (``bos``, ``eos``, ``pad``, ``decode``), from a prefix-LM captioner's
    tokenizer; two are equal when they come from the same LM (``words`` holds its fingerprint)."""

    def __init__(self, model: PrefixLMCaptioner, fingerprint: str) -> None:
        self.tokenizer, self.bos, self.eos, self.pad = model.tokenizer, model.bos, model.eos, model.pad
        self.fingerprint = fingerprint
        self.words = [f"<lm:{fingerprint}>"]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LMVocabulary) and self.words == other.words

    def decode(self, ids: list[int]) -> str:
        ids = [int(i) for i in ids]
        ids = ids[:ids.index(self.eos)] if self.eos in ids else ids
        return self.tokenizer.decode([i for i in ids if i != self.pad], skip_special_tokens=True).strip()


def build_prefix_lm(model_args: Mapping[str, Any]) -> tuple[PrefixLMCaptioner, LMVocabulary]:
    """A prefix-LM captioner from ``model_args`` (``lm``, ``frame_dim``, ``mapping``, ``prefix_length``, ``prompt``,
    ``chat_template``, ``system_prompt``, ``lora``, ``mapping_args`` and, once trained, ``lm_fingerprint``): the LM is
    loaded from its folder and refused if it is not the one the fingerprint names."""
    from common.lm import fingerprint, load_lm

    lm, tokenizer, folder = load_lm(str(model_args["lm"]))
    found, expected = fingerprint(lm), model_args.get("lm_fingerprint")
    if expected and found != expected:
        raise ValueError(f"LM '{model_args['lm']}' ({folder}, fingerprint {found[:12]}) is not the LM this captioner "
                         f"was trained with (fingerprint {str(expected)[:12]}); give that LM's folder")
    args = {k: model_args[k] for k in ("mapping", "prefix_length", "prompt", "chat_template", "lora", "mapping_args",
                                       "prompt_encoder", "system_prompt") if k in model_args}
    model = PrefixLMCaptioner(lm, tokenizer, int(model_args["frame_dim"]), **args)
    return model, LMVocabulary(model, found)


__all__ = ["AUDIO_MARK", "LMVocabulary", "LORA_DEFAULTS", "MAPPINGS", "PrefixLMCaptioner", "PromptEncoder",
           "build_prefix_lm", "pooled_slots", "prompt_pieces"]
