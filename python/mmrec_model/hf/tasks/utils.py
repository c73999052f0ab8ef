"""Datasets of the MM-Rec lm-evaluation-harness tasks, built offline from the corpus bundled with mmrec_model
(corpus/pretrain: held-out text the trainer never trains on)."""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Dict, List

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "pretrain"
ARTICLE_TITLE = re.compile(r"^ = [^=].* = $")       # WikiText's top-level heading: " = Title = "


def wikitext2_articles() -> List[str]:
    """The articles of wikitext2_valid_part.txt, each from its title line to the next title."""
    articles: List[List[str]] = []
    for line in (CORPUS / "wikitext2_valid_part.txt").read_text(encoding="utf-8").split("\n"):
        if ARTICLE_TITLE.match(line) or not articles:
            articles.append([])
        articles[-1].append(line)
    return ["\n".join(a).strip("\n") for a in articles if "".join(a).strip()]


def shakespeare_choices(n_choices: int = 4, seed: int = 0) -> List[Dict]:
    """Multiple choice from tinyshakespeare_valid.txt: given a speaker and the first line of a speech, pick its
    second line among the second lines of other speeches (drawn with a fixed seed)."""
    text = (CORPUS / "tinyshakespeare_valid.txt").read_text(encoding="utf-8")
    speeches = [block.split("\n") for block in text.split("\n\n")]
    speeches = [s for s in speeches if len(s) >= 3 and s[0].endswith(":")]
    rng = random.Random(seed)
    docs = []
    for i, speech in enumerate(speeches):
        others = rng.sample([j for j in range(len(speeches)) if speeches[j][2] != speech[2]], n_choices - 1)
        choices = [speech[2]] + [speeches[j][2] for j in others]
        rng.shuffle(choices)
        docs.append({"context": f"{speech[0]}\n{speech[1]}\n", "choices": choices,
                     "label": choices.index(speech[2])})
    return docs


def wikitext2(**kwargs) -> Dict:
    import datasets
    return {"test": datasets.Dataset.from_dict({"page": wikitext2_articles()})}


def shakespeare_mc(**kwargs) -> Dict:
    import datasets
    return {"test": datasets.Dataset.from_list(shakespeare_choices())}
