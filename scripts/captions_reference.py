"""Parity harness for `mmtt eval captions`: varied forgery-explanation captions, and the real
pycocoevalcap 1.2 scores of them (Java PTBTokenizer, Bleu(4), Rouge, Cider, Meteor 1.5).

    captions_reference.py gen N SEED DIR                 writes DIR/refs.json and DIR/preds.json
    captions_reference.py score REFS PREDS [METRICS]     prints the reference scores and tokenizations
                                                         as JSON; METRICS: all (default), ngram, meteor
    captions_reference.py tokenize LINES.json            prints pycocoevalcap's tokenization of each
                                                         caption of a JSON list, as a JSON list

The generator writes what machine-translated explanations contain, at realistic rates: typographic
quotes, apostrophes, dashes and ellipses (an LLM writes them), the words the PTB lexer splits
(cannot, gonna, ...), `|||` and other bars, words of other scripts, emoji, decomposed accents
(combining marks) and unusual spaces.
"""
import json
import os
import random
import sys

PARTS = ["left eye", "right eye", "eyes", "nose", "nostrils", "mouth", "upper lip", "lips", "teeth", "chin", "jaw", "jawline",
         "forehead", "eyebrows", "left eyebrow", "cheeks", "right cheek", "ears", "hairline", "hair", "skin", "iris", "pupils",
         "face boundary", "neck", "beard", "mustache", "wrinkles", "freckles", "dimple", "temples", "eyelashes"]
FLAWS = ["is blurred", "looks smudged", "has a visible blending seam", "is over-smoothed", "shows checkerboard artifacts",
         "has an unnatural colour", "is asymmetric", "is slightly distorted", "has double edges", "looks painted on",
         "does not match the lighting", "has a strange glossy sheen", "is misaligned with the other side of the face",
         "fades into the surrounding skin", "has GAN-like texture", "is 2.5 px off", "looks 30% darker"]
OPENERS = ["", "It seems that ", "I noticed that ", "Notice that ", "Clearly, ", "Moreover, ", "In addition, ", "Besides, "]
TAILS = ["", ", which looks unnatural", ", and this is a strong sign of editing", " when compared with the rest of the image",
         " (see the left side)", " -- a typical artifact", "; it's obvious", ", doesn't it?", "!", "..."]


def sentence(r):
    s = r.choice(OPENERS) + "the " + r.choice(PARTS) + " " + r.choice(FLAWS) + r.choice(TAILS)
    s = s[0].upper() + s[1:]
    if not s.endswith(("!", "?", "...")):
        s += "."
    return s


def caption(r, k=None):
    return " ".join(sentence(r) for _ in range(k or r.randint(1, 4)))


# synonyms, inflections and paraphrases, so that Meteor's stem, synonym and paraphrase modules match
SWAPS = {"blurred": ["blurry", "blurring", "fuzzy"], "looks": ["seems", "appears", "looked", "look"], "unnatural": ["artificial", "fake", "odd"],
         "smudged": ["smeared", "smudge"], "distorted": ["warped", "distorting", "deformed"], "colour": ["color", "colours", "hue"],
         "darker": ["dark", "darkened"], "strange": ["odd", "weird", "unusual"], "visible": ["noticeable", "obvious", "apparent"],
         "edges": ["edge", "borders", "boundaries"], "shows": ["showing", "displays", "exhibits"], "image": ["picture", "photo", "images"],
         "typical": ["common", "usual"], "sign": ["indication", "signs", "evidence"], "editing": ["edited", "manipulation", "tampering"],
         "surrounding": ["nearby", "adjacent", "surroundings"], "lighting": ["light", "illumination", "lights"], "eyes": ["eye"],
         "cheeks": ["cheek"], "lips": ["lip"], "is": ["was", "are", "seems to be"], "the": ["a", "this"], "has": ["have", "had", "contains"],
         "compared with": ["in comparison to", "relative to"], "does not": ["doesn't", "fails to"], "a strong": ["a clear", "strong"]}


def swap(r, text):
    keys = [k for k in SWAPS if (" " + k + " ") in (" " + text + " ")]
    for k in r.sample(keys, min(len(keys), r.randint(1, 4))):
        text = (" " + text + " ").replace(" " + k + " ", " " + r.choice(SWAPS[k]) + " ", 1).strip()
    return text


def perturb(r, text):
    kind = r.randrange(15)
    if kind >= 12:
        return swap(r, text)
    w = text.split()
    if kind == 0:
        return text
    if kind == 1 and len(w) > 3:
        del w[r.randrange(len(w))]
        return " ".join(w)
    if kind == 2:
        return text.upper() if r.random() < 0.5 else text.lower()
    if kind == 3:
        return '"' + text + '"'
    if kind == 4:
        return text.replace("does not", "doesn't").replace("is ", "'s ", 1) if "does not" in text else text + " It isn't real."
    if kind == 5:
        return caption(r)
    if kind == 6:
        return " ".join(w[: max(1, len(w) // 3)])
    if kind == 7:
        return text + " " + sentence(r)
    if kind == 8:
        return text.replace(",", " ,").replace(".", " . ")
    if kind == 9:
        return "Blurred " + r.choice(PARTS)
    if kind == 10:
        return text.replace(" ", "  ")
    return "(" + text + ")"


# captions that exercise the tokenizer's rules
EDGE = [
    "The eye's \"shine\" isn't right, it's fake.",
    "Look: the nose/mouth area is odd; e.g. the lips.",
    "Mr. Smith's jaw... looks off?!",
    "It's 3.5mm wide; 50% of the chin.",
    "The teeth\u2019s edges are \u201cmelted\u201d.",
    "Eyes: blurred & smeared.",
    "Over-smoothed skin--no pores.",
    "[ears] {hair} are odd",
    "can't won't shouldn't I'm we're they've you'll he'd",
    "A caption with\ttabs and   spaces",
    "Ends with an abbreviation etc.",
    "U.S. style retouch.",
    "The iris (left) has 2 colours: green/brown.",
    "'quoted' words 'here'",
    "R\u00e9sum\u00e9-like na\u00efve fa\u00e7ade",
    "1,000 pixels and 3.14 ratio",
    "#1 issue is the $5 cost",
    "What?! Really...",
    "The mouth\u2026 looks fake",
    "the chin's shadow and the brows' arch",
    "No. 5 is the worst, vs. the rest",
    "a.m. lighting at 10 p.m.",
    "It is 'fake'.",
    "The left eye.The right eye.",
]


# what an LLM translation writes: (probability per caption, rewrite)
NONLATIN = ["лицо", "Глаза", "脸部", "眼睛", "얼굴", "وجه", "चेहरा", "πρόσωπο", "ΣΚΙΑ", "עין", "ตา", "Ærø", "straße", "İris"]
EMOJI = ["\U0001F600", "\U0001F44D\U0001F3FD", "\u2764\ufe0f", "\U0001F642", "\u2705", "\u2728", "\U0001F440"]
SPLIT = ["cannot", "Cannot", "CANNOT", "gonna", "gotta", "wanna", "gimme", "lemme", "Gonna", "'tis", "'twas", "'Tis"]
COMBINING = ["\u0301", "\u0300", "\u0308", "\u0327", "\u0303"]


def typographic(r, text):
    """Rewrites ASCII punctuation the way an LLM writes it (each class drawn independently)."""
    if r.random() < 0.5:
        text = text.replace("'", "\u2019")
    if r.random() < 0.4:
        parts = text.split('"')
        text = "".join(p + (("\u201c" if i % 2 == 0 else "\u201d") if i < len(parts) - 1 else "") for i, p in enumerate(parts))
    if r.random() < 0.5:
        text = text.replace(" -- ", r.choice([" \u2014 ", "\u2014", " \u2013 ", "\u2013", " --- "]))
    if r.random() < 0.5:
        text = text.replace("...", r.choice(["\u2026", " \u2026", "...", ". . ."]))
    return text


def decorate(r, text, pred=False):
    """Adds the Unicode and lexer classes the ASCII generator never met, at realistic rates."""
    w = text.split(" ")
    def put(tok):
        w.insert(r.randrange(len(w) + 1), tok)
    if r.random() < 0.3:
        text = typographic(r, text)
        w = text.split(" ")
    if r.random() < 0.08:
        put(r.choice(["\u201c" + r.choice(PARTS) + "\u201d", "\u2018" + r.choice(PARTS) + "\u2019", "\u00ab" + r.choice(PARTS) + "\u00bb",
                      "\u201e" + r.choice(PARTS) + "\u201c", "\u201c\u2018nested\u2019\u201d", "(\u201cquoted\u201d)", "it\u2019s", "don\u2019t",
                      "eyes\u2019", "\u201990s", "o\u2019clock", "\u2018tis"]))
    if r.random() < 0.08:
        i = r.randrange(len(w))
        w[i] = w[i] + r.choice(["\u2014", "\u2013", "\u2026", "...", "....", "--", "-----", "\u2014\u2014"]) + (r.choice(PARTS).split()[0] if r.random() < 0.5 else "")
    if r.random() < 0.05:
        put(r.choice(SPLIT) + r.choice(["", "", ",", ".", "\u2026", "!"]))
    if r.random() < (0.03 if pred else 0.01):
        put(r.choice(["|||", "|", "||", "a|||b", "|||."]))
    if r.random() < 0.03:
        put(r.choice(NONLATIN))
    if r.random() < 0.02:
        i = r.randrange(len(w))
        w[i] = w[i] + r.choice(EMOJI) if r.random() < 0.5 else r.choice(EMOJI)
    if r.random() < 0.02:
        # decomposed accents: a mark after a letter
        i = r.randrange(len(w))
        js = [j for j in range(1, len(w[i]) + 1) if w[i][j - 1].isalpha()]
        if js:
            j = r.choice(js)
            w[i] = w[i][:j] + r.choice(COMBINING) + w[i][j:]
    if r.random() < 0.02:
        put(r.choice(["\u00a0", "\u2009", "\u200b", "\u3000", "\u00ad", "\u2022", "\u00b7", "\u00b0", "\u20ac5", "\u00bd", "\u2212", "\u00bfqu\u00e9?"]))
    return " ".join(w)


def gen(n, seed, d):
    r = random.Random(seed)
    refs, preds = {}, {}
    for i, e in enumerate(EDGE):
        refs[f"edge{i:03d}"] = [e, caption(r)]
        preds[f"edge{i:03d}"] = EDGE[(i + 1) % len(EDGE)]
    for i in range(n):
        key = f"img{i:05d}"
        rs = [caption(r) for _ in range(r.randint(1, 3))]
        pred = perturb(r, r.choice(rs))
        refs[key] = [decorate(r, c) for c in rs]
        preds[key] = decorate(r, pred, pred=True)
    os.makedirs(d, exist_ok=True)
    json.dump(refs, open(os.path.join(d, "refs.json"), "w"), indent=1)
    json.dump(preds, open(os.path.join(d, "preds.json"), "w"), indent=1)


def score(refs_path, preds_path, metrics="all"):
    import contextlib
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.cider.cider import Cider
    refs = json.load(open(refs_path))
    preds = json.load(open(preds_path))
    gts = {k: [{"caption": c} for c in v] for k, v in refs.items()}
    res = {k: [{"caption": v if isinstance(v, str) else v[0]}] for k, v in preds.items()}
    out = {}
    with contextlib.redirect_stdout(sys.stderr):
        tok = PTBTokenizer()
        g = tok.tokenize(gts)
        s = tok.tokenize(res)
        if metrics in ("all", "ngram"):
            b, _ = Bleu(4).compute_score(g, s, verbose=0)
            rl, _ = Rouge().compute_score(g, s)
            c, _ = Cider().compute_score(g, s)
            out.update({"BLEU-1": b[0], "BLEU-2": b[1], "BLEU-3": b[2], "BLEU-4": b[3], "ROUGE-L": float(rl), "CIDEr": float(c)})
        if metrics in ("all", "meteor"):
            from pycocoevalcap.meteor.meteor import Meteor
            m, per = Meteor().compute_score(g, s)
            out["METEOR"] = float(m)
            out["meteor_per_image"] = dict(zip(g.keys(), per))
    out["tokenized"] = {"refs": g, "preds": {k: v[0] for k, v in s.items()}}
    print(json.dumps(out))


def tokenize(lines_path):
    import contextlib
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    lines = json.load(open(lines_path))
    with contextlib.redirect_stdout(sys.stderr):
        t = PTBTokenizer().tokenize({str(i): [{"caption": c}] for i, c in enumerate(lines)})
    print(json.dumps([t[str(i)][0] for i in range(len(lines))], ensure_ascii=False))


if __name__ == "__main__":
    if sys.argv[1] == "tokenize":
        tokenize(sys.argv[2])
    elif sys.argv[1] == "gen":
        gen(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        score(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "all")
