"""CUTE-style character-manipulation tasks (Edman et al., 2024; the paper's App. E, Table 7).

Items are generated reproducibly from a seed and a frequency word list: wordfreq's
"small" lists, taken from the pinned ``wordfreq==3.1.1`` wheel by ``python -m
aunet.eval fetch cute`` (only the data files; wordfreq itself is not needed: the
lists are msgpack, read here by a small decoder). Words: the most frequent
alphabetic lower-case words of 3 to 10 letters (ASCII only for English).

Seven character-level tasks, each in CUTE's prompt style (an instruction, four
worked examples on other words, then the question; the answer is quoted):

- spell: "there" -> "t h e r e";  inverse_spell: "t h e r e" -> "there"
- contains: is "h" in "there"? -> "yes" / "no" (balanced)
- delete: every "e" from "there" -> "thr";  insert: "x" after every "e" -> "thexrex"
- substitute: every "e" by "a" -> "thara";  swap: "t" and "h" -> "htere"

Two scorings: ``cute_<task>`` is the exact match of greedy generation (the model's
cached generation, as CUTE and Table 7 do; chance 0, 50% for contains), and
``cute_<task>_mc`` is the likelihood of the right answer among distractors (near
misses: the untouched word, the wrong letter changed, one-letter edits; chance
1/n_options, 50% for contains). CUTE's word-level variants (sentences) are not
generated here.
"""

from __future__ import annotations

import gzip
import random
import struct
from functools import lru_cache
from pathlib import Path

from aunet.eval.fetch import WORDFREQ, MissingDataError, package_dir
from aunet.eval.registry import ALIASES, Item, TaskSpec, register

SUBTASKS = ("spell", "inverse_spell", "contains", "delete", "insert", "substitute", "swap")
N_EXAMPLES = 4  # worked examples in every prompt (CUTE's format)
N_OPTIONS = 4  # options of the likelihood variant (the answer and 3 distractors); contains has 2
DEFAULT_ITEMS = 500  # items generated per subtask when no limit is given
MIN_LEN, MAX_LEN = 3, 10
TOP_WORDS = 20000  # draw words from this many of the most frequent entries

INSTRUCTIONS = {
    "spell": "Spell out the word, putting spaces between each letter, based on the following examples:",
    "inverse_spell": "Write the word that is spelled out, without spaces, based on the following examples:",
    "contains": "Answer whether the letter is in the word, based on the following examples:",
    "delete": "Delete every instance of the letter from the word, based on the following examples:",
    "insert": "Add the second letter after every instance of the first letter in the word, based on the "
              "following examples:",
    "substitute": "Substitute every instance of the first letter with the second letter in the word, based on "
                  "the following examples:",
    "swap": "Swap the positions of the two letters in the word, based on the following examples:",
}


# ---------------------------------------------------------------------------- word lists
def _unpack(data: bytes):
    """Decode the msgpack subset that wordfreq's cBpack files use (arrays, maps, strings, numbers)."""
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ValueError("truncated msgpack data")
        out = data[pos:pos + n]
        pos += n
        return out

    def value():
        b = read(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return read(b & 0x1F).decode("utf-8")
        if 0x90 <= b <= 0x9F:
            return [value() for _ in range(b & 0x0F)]
        if 0x80 <= b <= 0x8F:
            return {value(): value() for _ in range(b & 0x0F)}
        fixed = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in fixed:
            return fixed[b]
        sized = {0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"),
                 0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"),
                 0xDC: (">H", "arr"), 0xDD: (">I", "arr"), 0xDE: (">H", "map"), 0xDF: (">I", "map")}
        if b in sized:
            fmt, kind = sized[b]
            (n,) = struct.unpack(fmt, read(struct.calcsize(fmt)))
            if kind == "str":
                return read(n).decode("utf-8")
            if kind == "bin":
                return read(n)
            if kind == "arr":
                return [value() for _ in range(n)]
            return {value(): value() for _ in range(n)}
        numbers = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i",
                   0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}
        if b in numbers:
            fmt = numbers[b]
            return struct.unpack(fmt, read(struct.calcsize(fmt)))[0]
        raise ValueError(f"unsupported msgpack type byte 0x{b:02x} at offset {pos - 1}")

    out = value()
    if pos != len(data):
        raise ValueError(f"msgpack data has {len(data) - pos} trailing bytes")
    return out


def available_languages(cache_dir: str | Path | None = None) -> list[str]:
    """Languages with a cached wordfreq "small" list."""
    d = package_dir(WORDFREQ, cache_dir)
    return sorted(p.name[len("small_"):-len(".msgpack.gz")] for p in d.glob("small_*.msgpack.gz"))


@lru_cache(maxsize=8)
def _ranked_words(path: str) -> tuple[str, ...]:
    data = _unpack(gzip.decompress(Path(path).read_bytes()))
    if not (isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("format") == "cB"):
        raise ValueError(f"{path}: not a wordfreq cBpack word list")
    return tuple(w for bucket in data[1:] for w in bucket)


def word_list(lang: str = "en", cache_dir: str | Path | None = None, top: int = TOP_WORDS) -> list[str]:
    """Frequent alphabetic lower-case words of 3-10 letters, most frequent first.

    ValueError for a language wordfreq has no list for (wordfreq itself would silently
    fall back to English); MissingDataError when the lists are not fetched.
    """
    path = package_dir(WORDFREQ, cache_dir) / f"small_{lang}.msgpack.gz"
    if not path.is_file():
        langs = available_languages(cache_dir)
        if not langs:
            raise MissingDataError(f"the CUTE tasks need wordfreq's word lists ({WORDFREQ.spec}), not in the "
                                   f"cache ({path.parent}); fetch them with `python -m aunet.eval fetch cute`")
        raise ValueError(f"no wordfreq word list for language {lang!r}; available: {', '.join(langs)}")
    words = []
    for w in _ranked_words(str(path))[:top]:
        if MIN_LEN <= len(w) <= MAX_LEN and w.isalpha() and w == w.lower() and (lang != "en" or w.isascii()):
            words.append(w)
    if len(words) < 50:
        raise ValueError(f"wordfreq list {path} has only {len(words)} usable words")
    return words


# ---------------------------------------------------------------------------- transformations
def spell(word: str) -> str:
    return " ".join(word)


def delete(word: str, c: str) -> str:
    return word.replace(c, "")


def insert(word: str, c: str, new: str) -> str:
    return word.replace(c, c + new)


def substitute(word: str, c: str, new: str) -> str:
    return word.replace(c, new)


def swap(word: str, a: str, b: str) -> str:
    i, j = word.index(a), word.index(b)
    chars = list(word)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def _edit(s: str, rng: random.Random, alphabet: str) -> str:
    """One random letter edit: swap neighbours, drop, double or replace a letter."""
    i = rng.randrange(len(s))
    kind = rng.randrange(4)
    if kind == 0 and len(s) > 1:
        i = min(i, len(s) - 2)
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if kind == 1 and len(s) > 1:
        return s[:i] + s[i + 1:]
    if kind == 2:
        return s[:i] + s[i] + s[i:]
    return s[:i] + rng.choice(alphabet) + s[i + 1:]


Made = tuple[str, str, list[str]]  # question, answer, plausible wrong answers


def _make(task: str, word: str, rng: random.Random, alphabet: str, want_yes: bool = True) -> Made | None:
    """Question, answer and task-specific wrong answers for ``word``; None if the word does not suit."""
    letters = sorted(set(word))
    if task == "spell":
        return f'Spell out the word "{word}".', spell(word), [word]
    if task == "inverse_spell":
        return f'Write the word "{spell(word)}" without spaces.', word, []
    if task == "contains":
        absent = [c for c in alphabet if c not in word]
        c = rng.choice(letters) if want_yes or not absent else rng.choice(absent)
        return f'Is there a "{c}" in "{word}"?', "yes" if c in word else "no", []
    if task == "delete":
        c = rng.choice(letters)
        others = [delete(word, o) for o in letters if o != c]
        return f'Delete every "{c}" from "{word}".', delete(word, c), [word, *others[:2]]
    if task == "insert":
        c, new = rng.choice(letters), rng.choice(alphabet)
        before = word.replace(c, new + c)
        first = word.replace(c, c + new, 1)
        return f'Add "{new}" after every "{c}" in "{word}".', insert(word, c, new), [before, first, word]
    if task == "substitute":
        c = rng.choice(letters)
        new = rng.choice([a for a in alphabet if a != c])
        first = word.replace(c, new, 1)
        other = rng.choice([o for o in letters if o != c] or [c])
        return (f'Substitute every "{c}" with "{new}" in "{word}".', substitute(word, c, new),
                [word, first, substitute(word, other, new)])
    if task == "swap":
        once = [c for c in letters if word.count(c) == 1]
        if len(once) < 2:
            return None
        a, b = rng.sample(once, 2)
        if word.index(a) > word.index(b):
            a, b = b, a
        rest = [c for c in once if c not in (a, b)]
        wrong = [word] + ([swap(word, a, rest[0])] if rest else [])
        return f'Swap "{a}" and "{b}" in "{word}".', swap(word, a, b), wrong
    raise ValueError(f"unknown CUTE subtask {task!r}; known: {', '.join(SUBTASKS)}")


def _distractors(task: str, word: str, answer: str, wrong: list[str], rng: random.Random, alphabet: str,
                 n: int) -> list[str]:
    out: list[str] = []
    for w in wrong:
        if w != answer and w not in out and len(out) < n:
            out.append(w)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 1000:
            raise RuntimeError(f"could not find {n} distractors for {task} {word!r}")
        cand = spell(_edit(word, rng, alphabet)) if task == "spell" else _edit(answer, rng, alphabet)
        if cand and cand != answer and cand not in out:
            out.append(cand)
    return out


def _prompt(task: str, examples: list[tuple[str, str]], question: str) -> str:
    shots = "".join(f'Question: {q}\nAnswer: "{a}"\n\n' for q, a in examples)
    return f'{INSTRUCTIONS[task]}\n\n{shots}Question: {question}\nAnswer: "'


def generate_items(task: str, n: int = DEFAULT_ITEMS, seed: int = 0, lang: str = "en", n_options: int = N_OPTIONS,
                   n_examples: int = N_EXAMPLES, cache_dir: str | Path | None = None,
                   words: list[str] | None = None) -> list[Item]:
    """``n`` items of one CUTE subtask, the same for the same arguments.

    Each item's context is the full prompt ending in an opening quote; options are the
    quoted answers closed by '"' (the answer first-listed in ``target`` for exact match);
    test words never appear among the worked examples. ``words`` replaces the wordfreq list.
    """
    if task not in SUBTASKS:
        raise ValueError(f"unknown CUTE subtask {task!r}; known: {', '.join(SUBTASKS)}")
    if n < 1 or n_options < 2 or n_examples < 0:
        raise ValueError(f"need n >= 1, n_options >= 2, n_examples >= 0 (got {n}, {n_options}, {n_examples})")
    words = list(words) if words is not None else word_list(lang, cache_dir)
    alphabet = "".join(sorted({c for w in words for c in w}))
    rng = random.Random(f"cute-{task}-{lang}-{seed}")
    order = rng.sample(words, len(words))
    examples: list[tuple[str, str]] = []
    items = []
    k = 0
    for word in order:
        made = _make(task, word, rng, alphabet, want_yes=(len(examples) + len(items)) % 2 == 0)
        if made is None:
            continue
        question, answer, wrong = made
        if len(examples) < n_examples:
            examples.append((question, answer))
            continue
        if task == "contains":
            options = ["yes", "no"]
        else:
            options = [answer, *_distractors(task, word, answer, wrong, rng, alphabet, n_options - 1)]
            rng.shuffle(options)
        items.append(Item(_prompt(task, examples, question), tuple(o + '"' for o in options), options.index(answer),
                          id=f"cute_{task}/{lang}/{seed}/{k}", target=answer + '"'))
        k += 1
        if len(items) == n:
            break
    if len(items) < n:
        raise ValueError(f"CUTE {task}: only {len(items)} suitable words for {n} items in language {lang!r}")
    return items


# ---------------------------------------------------------------------------- registration
def _generator(task: str):
    def generate(cache_dir=None, seed=0, n=DEFAULT_ITEMS) -> list[Item]:
        return generate_items(task, n=n, seed=seed, cache_dir=cache_dir)

    return generate


for _task in SUBTASKS:  # cute_<task>: exact match of greedy generation; cute_<task>_mc: likelihood
    _generate = _generator(_task)
    register(TaskSpec(f"cute_{_task}", WORDFREQ, kind="gen", generator=_generate,
                      chance_override=0.5 if _task == "contains" else 0.0,
                      description=f"CUTE {_task} (char), exact match of greedy generation"))
    register(TaskSpec(f"cute_{_task}_mc", WORDFREQ, kind="mc", generator=_generate,
                      description=f"CUTE {_task} (char), likelihood among {2 if _task == 'contains' else N_OPTIONS}"
                                  " options"))
ALIASES["cute"] = [f"cute_{t}" for t in SUBTASKS]
ALIASES["cute_mc"] = [f"cute_{t}_mc" for t in SUBTASKS]
