//! `mmtt eval captions --refs R.json --preds P.json`: R is `{"id": ["ref", ...]}`, P is
//! `{"id": "hyp"}` (a one-element list is accepted too). Both must name the same ids. Tokenized
//! as pycocoevalcap does ([`super::tokenize`]), then BLEU-1..4, ROUGE-L and CIDEr on
//! pycocoevalcap's raw scales; METEOR ([`super::meteor`]) with Meteor's data (the CLI refuses to
//! run all metrics without it; `--metrics ngram` reports METEOR `null`).

use super::{EvalError, bleu, cider, meteor, rouge, tokenize::tokenize};
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaptionScores {
    #[serde(rename = "BLEU-1")]
    pub bleu1: f64,
    #[serde(rename = "BLEU-2")]
    pub bleu2: f64,
    #[serde(rename = "BLEU-3")]
    pub bleu3: f64,
    #[serde(rename = "BLEU-4")]
    pub bleu4: f64,
    #[serde(rename = "METEOR")]
    pub meteor: Option<f64>,
    #[serde(rename = "ROUGE-L")]
    pub rouge_l: f64,
    #[serde(rename = "CIDEr")]
    pub cider: f64,
}

/// References and predictions, parsed and checked.
pub struct CaptionSet {
    /// id -> (prediction, references), in id order.
    pub items: BTreeMap<String, (String, Vec<String>)>,
}

impl CaptionSet {
    /// Parses the two JSON texts; lists ids that are in one file but not the other.
    pub fn parse(refs: &str, preds: &str) -> Result<Self, EvalError> {
        // typed parsing: no intermediate JSON tree (a prediction may be a string or a list)
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Pred {
            One(String),
            List(Vec<String>),
        }
        let r: BTreeMap<String, Vec<String>> = serde_json::from_str(refs)
            .map_err(|e| EvalError::Input(format!("references: expected a JSON object of id -> list of caption strings: {e}")))?;
        let mut p: BTreeMap<String, Pred> = serde_json::from_str(preds)
            .map_err(|e| EvalError::Input(format!("predictions: expected a JSON object of id -> caption string: {e}")))?;
        let only_r: Vec<&String> = r.keys().filter(|k| !p.contains_key(*k)).collect();
        let only_p: Vec<&String> = p.keys().filter(|k| !r.contains_key(*k)).collect();
        if !only_r.is_empty() || !only_p.is_empty() {
            let show = |v: &[&String]| {
                v.iter().take(20).map(|s| s.as_str()).collect::<Vec<_>>().join(", ") + if v.len() > 20 { ", ..." } else { "" }
            };
            return Err(EvalError::Input(format!(
                "the files must name the same ids: {} only in the references [{}], {} only in the predictions [{}]",
                only_r.len(),
                show(&only_r),
                only_p.len(),
                show(&only_p)
            )));
        }
        if r.is_empty() {
            return Err(EvalError::Input("no ids to evaluate".into()));
        }
        let mut items = BTreeMap::new();
        for (id, refs) in r {
            if refs.is_empty() {
                return Err(EvalError::Input(format!("id `{id}` has no reference caption")));
            }
            let hyp = match p.remove(&id) {
                Some(Pred::One(s)) => s,
                Some(Pred::List(mut l)) if l.len() == 1 => l.remove(0),
                _ => return Err(EvalError::Input(format!("the prediction of id `{id}` must be one string (or a list with one string)"))),
            };
            items.insert(id, (hyp, refs));
        }
        Ok(CaptionSet { items })
    }

    /// Corpus METEOR alone (pycocoevalcap's PTB tokenization, then Meteor 1.5).
    pub fn meteor(&self, data: &meteor::MeteorData) -> Result<f64, EvalError> {
        let tokenized: Vec<(String, Vec<String>)> =
            self.items.par_iter().map(|(_, (h, rs))| (tokenize(h), rs.iter().map(|r| tokenize(r)).collect())).collect();
        Ok(meteor::score(data, &tokenized)?.0)
    }

    /// Scores on pycocoevalcap's raw scales; METEOR only with `meteor` data.
    pub fn score(&self, meteor_data: Option<&meteor::MeteorData>) -> Result<CaptionScores, EvalError> {
        self.score_timed(meteor_data, &mut Vec::new())
    }

    /// [`Self::score`], adding where the time went to `phases` (`mmtt bench captions` prints it).
    pub fn score_timed(&self, meteor_data: Option<&meteor::MeteorData>, phases: &mut meteor::Phases) -> Result<CaptionScores, EvalError> {
        // Meteor's lexicon does not depend on the captions: it is read on a thread of its own
        // while the captions are tokenized and the n-gram metrics computed
        std::thread::scope(|scope| {
            let lexicon = meteor_data.map(|d| scope.spawn(move || meteor::Lexicon::load(d)));
            let t = std::time::Instant::now();
            let tokenized: Vec<(String, Vec<String>)> =
                self.items.par_iter().map(|(_, (h, rs))| (tokenize(h), rs.iter().map(|r| tokenize(r)).collect())).collect();
            phases.push(("tokenize (PTBTokenizer and its filter)".into(), t.elapsed().as_secs_f64()));
            let mut scores = ngram_scores(&tokenized, phases);
            if let (Some(d), Some(l)) = (meteor_data, lexicon) {
                let t = std::time::Instant::now();
                let l = l.join().map_err(|_| EvalError::Input("reading Meteor's lexicon failed (its thread panicked)".into()))??;
                phases.push(("METEOR: waiting for the jar lexicon after the above".into(), t.elapsed().as_secs_f64()));
                scores.meteor = Some(meteor::score_timed(d, Some(l), &tokenized, phases)?.0);
            }
            Ok(scores)
        })
    }
}

/// BLEU-1..4, ROUGE-L and CIDEr of tokenized captions (METEOR `None`).
fn ngram_scores(tokenized: &[(String, Vec<String>)], phases: &mut meteor::Phases) -> CaptionScores {
    let t = std::time::Instant::now();
    // words to ids, once: n-grams become integer keys
    let mut vocab: HashMap<&str, u32> = HashMap::default();
    let mut items: Vec<(Vec<u32>, Vec<Vec<u32>>)> = Vec::with_capacity(tokenized.len());
    fn conv<'a>(t: &'a str, vocab: &mut HashMap<&'a str, u32>) -> Vec<u32> {
        t.split_whitespace()
            .map(|w| {
                let next = vocab.len() as u32;
                *vocab.entry(w).or_insert(next)
            })
            .collect()
    }
    for (h, rs) in tokenized {
        let hv = conv(h, &mut vocab);
        let rv: Vec<Vec<u32>> = rs.iter().map(|r| conv(r, &mut vocab)).collect();
        items.push((hv, rv));
    }
    let narrow = (vocab.len() as u32) < bleu::NARROW_IDS;
    let counts: Vec<(bleu::Sorted, Vec<bleu::Sorted>)> = items
        .par_iter()
        .map(|(h, rs)| (bleu::sorted_counts_with(h, narrow), rs.iter().map(|r| bleu::sorted_counts_with(r, narrow)).collect()))
        .collect();
    let comps: Vec<bleu::Comps> = items
        .par_iter()
        .zip(&counts)
        .map(|((h, rs), (hc, rcs))| bleu::comps(h.len(), hc, &rs.iter().map(Vec::len).collect::<Vec<_>>(), rcs))
        .collect();
    let (b, _) = bleu::score(&comps);
    phases.push(("BLEU-1..4 (words to ids, n-gram counts, BLEU)".into(), t.elapsed().as_secs_f64()));
    let t = std::time::Instant::now();
    let rouges: Vec<f64> = items.par_iter().map(|(h, rs)| rouge::score(h, rs)).collect();
    phases.push(("ROUGE-L".into(), t.elapsed().as_secs_f64()));
    let t = std::time::Instant::now();
    let (c, _) = cider::score(&counts);
    phases.push(("CIDEr".into(), t.elapsed().as_secs_f64()));
    CaptionScores {
        bleu1: b[0],
        bleu2: b[1],
        bleu3: b[2],
        bleu4: b[3],
        meteor: None,
        rouge_l: rouges.iter().sum::<f64>() / rouges.len() as f64,
        cider: c,
    }
}
