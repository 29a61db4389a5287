//! The assembled model. [`InstructBlip`] is transformers' `InstructBlipForConditionalGeneration`
//! module tree (`vision_model`, `query_tokens`, `qformer`, `language_projection`,
//! `language_model`); [`Talker`] adds the release's mask branch. The forward path is the
//! release's (spec 1.4-1.7): image embeddings -> Q-Former over [queries ; instruction] ->
//! `language_projection` -> T5 encoder input [projected queries ; T5 embeddings of the same
//! instruction] with the matching mask, and, for the mask, the region words' T5 embeddings.

use super::config::TalkerConfig;
use super::eva_vit::VisionModel;
use super::mask_branch::MaskBranch;
use super::qformer::QFormer;
use super::t5::T5;
use super::tokenize::pad_batch;
use crate::fpn::face_vit::Init;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};

#[derive(Module, Debug)]
pub struct InstructBlip {
    pub vision_model: VisionModel,
    pub query_tokens: Param<Tensor<3>>,
    pub qformer: QFormer,
    pub language_projection: Linear,
    pub language_model: T5,
}

/// An InstructBLIP with the release's optional mask branch, and its configuration.
#[derive(Debug)]
pub struct Talker {
    pub config: TalkerConfig,
    pub blip: InstructBlip,
    pub mask: Option<MaskBranch>,
}

/// Ids [B][L] as an Int tensor.
pub fn ids_tensor(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let b = rows.len();
    let l = rows.first().map_or(0, Vec::len);
    let v: Vec<i64> = rows.iter().flat_map(|r| r.iter().map(|x| *x as i64)).collect();
    Tensor::from_data(TensorData::new(v, [b, l]), device)
}

impl InstructBlip {
    pub fn new(cfg: &TalkerConfig, init: &mut Init) -> Self {
        InstructBlip {
            vision_model: VisionModel::new(&cfg.vision, init),
            query_tokens: init.trunc_normal([1, cfg.num_query_tokens, cfg.qformer.hidden_size], 0.02),
            qformer: QFormer::new(&cfg.qformer, init),
            language_projection: init.linear(cfg.qformer.hidden_size, cfg.text.d_model),
            language_model: T5::new(&cfg.text, init),
        }
    }

    /// Image embeddings [B, 1 + P, D] for pixels [B, 3, S, S].
    pub fn image_embeds(&self, cfg: &TalkerConfig, pixels: Tensor<4>) -> Tensor<3> {
        self.vision_model.forward(&cfg.vision, pixels)
    }

    /// The Q-Former's query outputs [B, Q, H] for the instructions' BERT ids (unpadded rows).
    pub fn query_outputs(&self, cfg: &TalkerConfig, image: Tensor<3>, qformer_ids: &[Vec<u32>]) -> Tensor<3> {
        let [b, _, _] = image.dims();
        let device = image.device();
        let (ids, mask) = pad_batch(qformer_ids, cfg.qformer.pad_token_id);
        let queries = self.query_tokens.val().expand([b, cfg.num_query_tokens, cfg.qformer.hidden_size]);
        self.qformer.forward(&cfg.qformer, queries, ids_tensor(&ids, &device), &mask, image)
    }

    /// T5's encoder input [B, Q + L, d] = [projected queries ; embeddings of the instruction's T5
    /// ids (unpadded rows)] and its 0/1 mask.
    pub fn encoder_input(&self, cfg: &TalkerConfig, query_out: Tensor<3>, t5_ids: &[Vec<u32>]) -> (Tensor<3>, Vec<Vec<u8>>) {
        let device = query_out.device();
        let projected = self.language_projection.forward(query_out);
        let (ids, mask) = pad_batch(t5_ids, cfg.text.pad_token_id);
        let text = self.language_model.embed(ids_tensor(&ids, &device));
        let q = cfg.num_query_tokens;
        let mask = mask.into_iter().map(|m| std::iter::repeat_n(1u8, q).chain(m).collect()).collect();
        (Tensor::cat(vec![projected, text], 1), mask)
    }

    /// The T5 encoder's output for an encoder input.
    pub fn encode(&self, cfg: &TalkerConfig, input: Tensor<3>, mask: &[Vec<u8>]) -> Tensor<3> {
        self.language_model.encode(&cfg.text, input, mask)
    }
}

impl Talker {
    /// A model with random weights from `seed` (benchmarks, tests).
    pub fn random(config: TalkerConfig, seed: u64, device: &Device) -> Self {
        let mut init = Init::new(seed, device);
        let blip = InstructBlip::new(&config, &mut init);
        let mask = config.mask_branch.as_ref().map(|m| MaskBranch::new(m, config.text.d_model, config.vision.hidden_size, &mut init));
        Talker { config, blip, mask }
    }

    /// Mask probabilities [B, S, S] from image embeddings and the label words' padded T5 ids
    /// [B][label_tokens]; `None` without a mask branch.
    pub fn mask_probs(&self, image: Tensor<3>, label_ids: &[Vec<u32>]) -> Option<Tensor<3>> {
        let (branch, cfg) = (self.mask.as_ref()?, self.config.mask_branch.as_ref()?);
        let device = image.device();
        let embeds = self.blip.language_model.embed(ids_tensor(label_ids, &device));
        Some(branch.forward(cfg, image, embeds))
    }
}
