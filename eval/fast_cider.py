"""A vectorized CIDEr-D for SCST rewards, with document frequencies computed once.

pycocoevalcap recomputes document frequencies and every reference's tf-idf vector on each call, in Python
dictionaries. :class:`FastCiderD` does that once for a fixed reference corpus (the training captions), keeps each
reference as a sorted array of ``(reference row, n-gram id)`` keys, and scores a batch of candidates with a few
numpy operations over all (candidate, reference) pairs at once. Words are integer ids and n-grams integers
(16 bits per word for n = 4, so at most 65,535 distinct words between the corpus and a batch).

The formula is pycocoevalcap's CIDEr-D, term for term:
  * n-grams of order 1..n (n = 4), tf-idf weights ``tf * (log(#clips) - log(max(1, df)))`` where ``df`` counts the
    clips whose references contain the n-gram;
  * per order, ``sum_g min(w_cand[g], w_ref[g]) * w_ref[g] / (|w_cand| |w_ref|)`` (the clipping of CIDEr-D),
    times the Gaussian length penalty ``exp(-delta^2 / (2 sigma^2))`` with sigma = 6;
  * mean over orders, mean over the clip's references, times 10.
One quirk is kept for exact agreement: pycocoevalcap's "length" of a sentence is its number of bigrams
(``len(words) - 1``), not words; the difference of two lengths, and so the penalty, is the same except when one
sentence is empty or a single word.

With ``FastCiderD(mult_references)`` built on the scored set itself (as pycocoevalcap does), scores equal
pycocoevalcap's ``Cider`` clip by clip to floating-point rounding, given the same tokens (tested on Clotho).

Tokens: word lists are used as given. Strings go through ``tokenizer`` (default :func:`eval.tokenizer.simple_tokenize`,
lower-case and punctuation to spaces; it differs from the PTB tokenizer on contractions and hyphens, see there).
For parity with pycocoevalcap pass PTB-tokenized word lists, or PTB-tokenized strings with ``tokenizer=str.split``.
"""
import math
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from .tokenizer import simple_tokenize

Sentence = str | Sequence[str]


class FastCiderD:
    """CIDEr-D against a fixed reference corpus.

    Args:
        references: ``{clip_key: [reference, ...]}`` or a sequence of reference lists (keys are then positions).
            Each reference is a string or a list of words. Document frequencies come from these clips.
        n: highest n-gram order. sigma: width of the length penalty. tokenizer: for string inputs.
    """

    def __init__(self, references: Mapping[Hashable, Sequence[Sentence]] | Sequence[Sequence[Sentence]], *,
                 n: int = 4, sigma: float = 6.0, tokenizer: Callable[[str], list[str]] = simple_tokenize) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Invalid n. (expected an int >= 1, found {n!r})")
        if isinstance(references, Mapping):
            keys, ref_lists = list(references.keys()), [references[k] for k in references]
        elif isinstance(references, Sequence) and not isinstance(references, str):
            keys, ref_lists = list(range(len(references))), list(references)
        else:
            raise ValueError(f"Invalid references. (expected a mapping or list of reference lists, "
                             f"found {type(references).__name__})")
        if not ref_lists:
            raise ValueError("Invalid references. (expected at least one clip, found none)")
        self.n, self.sigma, self.tokenizer = n, float(sigma), tokenizer
        self._key_index = {k: i for i, k in enumerate(keys)}

        # Words become ids 1..W and an n-gram the base-2^bits number of its word ids, so a batch's n-grams are
        # found with numpy instead of Python dictionaries of tuples (ids start at 1: orders never collide).
        self._bits = 64 // n
        self._word_ids: dict[str, int] = {}
        row_words: list[list[int]] = []
        clip_start = np.zeros(len(ref_lists), dtype=np.int64)
        clip_count = np.zeros(len(ref_lists), dtype=np.int64)
        for c, refs in enumerate(ref_lists):
            if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
                raise ValueError(f"Invalid references. (expected a non-empty list of references for clip "
                                 f"{keys[c]!r}, found {type(refs).__name__})")
            clip_start[c], clip_count[c] = len(row_words), len(refs)
            for ref in refs:
                words = self._words(ref, "references")
                row_words.append([self._word_ids.setdefault(w, len(self._word_ids) + 1) for w in words])
        n_rows = len(row_words)
        row_clip = np.repeat(np.arange(len(ref_lists)), clip_count)
        row, code, order, tf = self._count_ngrams(row_words, n_rows)
        self._codes, gram = np.unique(code, return_inverse=True)  # sorted n-gram codes; gram = id per entry
        self._order = np.zeros(len(self._codes), dtype=np.int64)
        self._order[gram] = order
        # df: number of clips whose references contain the n-gram.
        clip_gram = np.unique(row_clip[row] * len(self._codes) + gram)
        df = np.bincount(clip_gram % max(len(self._codes), 1), minlength=len(self._codes))
        self._clip_start, self._clip_count = clip_start, clip_count
        self._log_n = math.log(float(len(ref_lists)))
        self._idf = self._log_n - np.log(np.maximum(1.0, df.astype(np.float64)))
        n_grams = max(len(self._codes), 1)
        # Sorted (row, gram) keys let a batch look up any reference's count of any n-gram with one searchsorted.
        keys_flat = row * n_grams + gram
        sort = np.argsort(keys_flat, kind="stable")
        self._n_grams = n_grams
        self._ref_keys, self._ref_tf = keys_flat[sort], tf[sort]
        norm_sq = np.bincount(row * n + order, weights=(tf * self._idf[gram]) ** 2, minlength=n_rows * n)
        self._ref_norm = np.sqrt(norm_sq).reshape(n_rows, n)  # (R, n)
        self._ref_len = np.array([_length(w, n) for w in row_words], dtype=np.float64)  # (R,)

    def _count_ngrams(self, sentences: list[list[int]], n_sent: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Distinct n-grams of word-id sentences: (sentence index, code, order - 1, count), sorted by sentence."""
        lengths = np.fromiter((len(w) for w in sentences), dtype=np.int64, count=n_sent)
        ids = np.fromiter((i for w in sentences for i in w), dtype=np.uint64, count=int(lengths.sum()))
        if ids.size and int(ids.max()) >= (1 << self._bits):
            raise ValueError(f"Too many distinct words ({int(ids.max())}) for {self.n}-gram codes of "
                             f"{self._bits} bits per word")
        owner = np.repeat(np.arange(n_sent), lengths)
        sent, codes, orders = [], [], []
        code = np.zeros(len(ids), dtype=np.uint64)
        for k in range(self.n):
            # code of the (k+1)-gram starting at each position; valid where it ends inside its sentence
            m = len(ids) - k
            if m <= 0:
                break
            code = (code[:m] << np.uint64(self._bits)) | ids[k:]
            ok = owner[:m] == owner[k:]
            sent.append(owner[:m][ok])
            codes.append(code[ok])
            orders.append(np.full(int(ok.sum()), k, dtype=np.int64))
        if not sent:
            empty = np.zeros(0, dtype=np.int64)
            return empty, np.zeros(0, dtype=np.uint64), empty, np.zeros(0)
        sent_a, codes_a, orders_a = np.concatenate(sent), np.concatenate(codes), np.concatenate(orders)
        sort = np.lexsort((codes_a, sent_a))
        sent_a, codes_a, orders_a = sent_a[sort], codes_a[sort], orders_a[sort]
        first = np.ones(len(sent_a), dtype=bool)
        first[1:] = (sent_a[1:] != sent_a[:-1]) | (codes_a[1:] != codes_a[:-1])
        starts = np.nonzero(first)[0]
        counts = np.diff(np.append(starts, len(sent_a))).astype(np.float64)
        return sent_a[starts], codes_a[starts], orders_a[starts], counts

    def __len__(self) -> int:
        return len(self._key_index)

    def _words(self, sentence: Sentence, what: str) -> list[str]:
        if isinstance(sentence, str):
            return self.tokenizer(sentence)
        if isinstance(sentence, Sequence) and all(isinstance(w, str) for w in sentence):
            return list(sentence)
        raise ValueError(f"Invalid {what}. (expected str or list[str] per sentence, found {type(sentence).__name__})")

    def score(self, candidates: Sequence[Sentence], keys: Sequence[Hashable]) -> np.ndarray:
        """CIDEr-D of ``candidates[i]`` against the references of clip ``keys[i]``; returns float64 [len(candidates)].

        Keys may repeat (several samples per clip, or the same clip twice in a batch): each candidate is scored
        on its own.
        """
        if len(candidates) != len(keys):
            raise ValueError(f"Invalid inputs. (expected as many keys as candidates, found {len(keys)} keys and "
                             f"{len(candidates)} candidates)")
        n_cand, n = len(candidates), self.n
        if n_cand == 0:
            return np.zeros(0)
        try:
            clip = np.fromiter((self._key_index[k] for k in keys), dtype=np.int64, count=n_cand)
        except KeyError as err:
            raise KeyError(f"Clip key {err.args[0]!r} is not among the {len(self)} clips this scorer was built on") \
                from None

        # Candidate n-grams: (candidate, gram id or -1 when no reference has it, tf, order). Words no reference
        # has get fresh ids, so their n-grams count as distinct (they still weigh in the candidate's norm).
        unknown: dict[str, int] = {}
        cand_words = []
        for sentence in candidates:
            words = self._words(sentence, "candidates")
            cand_words.append([self._word_ids.get(w) or unknown.setdefault(w, len(self._word_ids) + len(unknown) + 1)
                               for w in words])
        cand_len = np.array([_length(w, n) for w in cand_words], dtype=np.float64)
        e_cand_a, e_code, e_order_a, e_tf_a = self._count_ngrams(cand_words, n_cand)
        e_gram_a = np.full(len(e_code), -1, dtype=np.int64)
        if len(self._codes):
            pos = np.minimum(np.searchsorted(self._codes, e_code), len(self._codes) - 1)
            e_gram_a = np.where(self._codes[pos] == e_code, pos, -1)
        known = e_gram_a >= 0
        # An n-gram in no reference has df 0, i.e. idf log(#clips): it only adds to the candidate's norm.
        weight = np.append(self._idf, self._log_n)[e_gram_a]  # id -1 picks the appended log(#clips)
        cand_norm = np.sqrt(np.bincount(e_cand_a * n + e_order_a, weights=(e_tf_a * weight) ** 2,
                                        minlength=n_cand * n).astype(np.float64)).reshape(n_cand, n)  # (B, n)

        # (candidate, reference) pairs: each candidate with every reference of its clip.
        per_cand = self._clip_count[clip]  # (B,)
        pair_cand = np.repeat(np.arange(n_cand), per_cand)  # (P,)
        first_pair = np.cumsum(per_cand) - per_cand
        pair_ref = self._clip_start[clip][pair_cand] + np.arange(len(pair_cand)) - first_pair[pair_cand]

        # Numerators: every known candidate n-gram of every pair, looked up in that pair's reference.
        k_cand, k_gram, k_tf, k_order = e_cand_a[known], e_gram_a[known], e_tf_a[known], e_order_a[known]
        k_w2 = self._idf[k_gram] ** 2
        k_per_cand = np.bincount(k_cand, minlength=n_cand)
        k_first = np.cumsum(k_per_cand) - k_per_cand
        per_pair = k_per_cand[pair_cand]
        pair_of = np.repeat(np.arange(len(pair_cand)), per_pair)  # (E,)
        first_of_pair = np.cumsum(per_pair) - per_pair
        entry = k_first[pair_cand[pair_of]] + np.arange(len(pair_of)) - first_of_pair[pair_of]
        lookup = pair_ref[pair_of] * self._n_grams + k_gram[entry]
        pos = np.minimum(np.searchsorted(self._ref_keys, lookup), len(self._ref_keys) - 1)
        ref_tf = np.where(self._ref_keys[pos] == lookup, self._ref_tf[pos], 0.0)
        # min(tf_c w, tf_r w) * tf_r w with w >= 0 is min(tf_c, tf_r) * tf_r * w^2: CIDEr-D's clipping.
        contrib = np.minimum(k_tf[entry], ref_tf) * ref_tf * k_w2[entry]
        num = np.bincount(pair_of * n + k_order[entry], weights=contrib,
                          minlength=len(pair_cand) * n).astype(np.float64).reshape(-1, n)  # (P, n)

        denom = cand_norm[pair_cand] * self._ref_norm[pair_ref]  # (P, n)
        sim = np.divide(num, denom, out=num.copy(), where=denom != 0)
        delta = cand_len[pair_cand] - self._ref_len[pair_ref]
        sim *= np.exp(-(delta ** 2) / (2 * self.sigma ** 2))[:, None]
        per_pair_score = sim.mean(axis=1)
        return np.bincount(pair_cand, weights=per_pair_score, minlength=n_cand) / per_cand * 10.0


def fast_cider_d(candidates: list[Sentence], mult_references: list[list[Sentence]], *, n: int = 4,
                 sigma: float = 6.0, tokenizer: Callable[[str], list[str]] = simple_tokenize
                 ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """CIDEr-D of a set with document frequencies from its own references, like pycocoevalcap's ``Cider``.

    Same signature and keys as :func:`eval.cider_d.cider_d`, but no PTB tokenization (see the module docstring).
    """
    if not isinstance(candidates, list):
        raise ValueError(f"Invalid candidates. (expected list[str] or list[list[str]], found "
                         f"{type(candidates).__name__})")
    if not isinstance(mult_references, list) or len(mult_references) != len(candidates):
        found = (f"{len(mult_references)} reference lists for {len(candidates)} candidates"
                 if isinstance(mult_references, list) else type(mult_references).__name__)
        raise ValueError(f"Invalid mult_references. (expected one list of references per candidate, found {found})")
    if not candidates:
        raise ValueError("Invalid candidates. (expected at least one candidate, found an empty list)")
    scorer = FastCiderD(mult_references, n=n, sigma=sigma, tokenizer=tokenizer)
    scores = scorer.score(candidates, range(len(candidates)))
    return {"cider_d": float(scores.mean())}, {"cider_d": scores.tolist()}


def _length(words: list[str], n: int) -> int:
    # pycocoevalcap counts the bigrams of a sentence as its length (see the module docstring).
    return max(len(words) - 1, 0) if n >= 2 else 0
