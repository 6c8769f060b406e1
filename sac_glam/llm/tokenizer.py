"""Word-level tokenizer over Playground-Text's closed vocabulary (for the offline tiny models).

One token per word; ``:`` and ``,`` are isolated as their own tokens, so
``"You see: green water, blue rose"`` -> ``You see : green water , blue rose``. Words are
case-sensitive (``Grasp`` and ``grasp`` are different tokens).

Special tokens sit at the END of the vocabulary (``<pad>``, ``</s>``, ``<unk>`` get the ids
``n_words``, ``n_words + 1``, ``n_words + 2``): token id 0 is a real word. Lamorel hard-codes the pad
id to 0 and silently drops real id-0 tokens (``docs/lamorel_facts.md``); putting a real word at 0 makes any
such assumption in our code fail loudly in the scoring tests instead of passing by luck.
``specials_first=True`` puts them first instead (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, as in T5):
the layout under which Lamorel's own forward (pad and decoder start 0) is exact, for its parity tests.

No EOS is appended automatically (no post-processor): an action's score is the sum of its word
tokens' log-probs, without an end-of-sequence token, as in Lamorel and the paper's eq. 1.
"""

from __future__ import annotations

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"


def build_word_tokenizer(words: list[str], specials_first: bool = False) -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer: ``words`` (deduplicated, order kept) then ``<pad> </s> <unk>``
    (or ``<pad> </s> <unk>`` then the words with ``specials_first``)."""
    vocab: dict[str, int] = {}
    if specials_first:
        for special in (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN):
            vocab[special] = len(vocab)
    for w in words:
        if w in (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN):
            raise ValueError(f"{w!r} is reserved for a special token")
        if any(c.isspace() for c in w) or not w:
            raise ValueError(f"vocabulary entries must be single non-empty words, got {w!r}")
        vocab.setdefault(w, len(vocab))
    for special in (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN):
        vocab.setdefault(special, len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Whitespace splits on spaces/newlines; Punctuation isolates ":" and "," (and any other mark).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="right",
        model_max_length=1024,
    )
