-- Stage-2 training jobs (issue 16): the figures a ForgeryTalker (explainer and mask decoder)
-- `train` job reports beside its loss: the loss's parts (T5 token cross-entropy and the mask
-- loss) at each step, and each validation's CIDEr, BLEU-4 and their sum (the model-selection
-- score). Stage-1 rows leave them empty, as stage-2 rows leave val_plm.
ALTER TABLE train_metrics
    ADD COLUMN lm_loss   double precision,
    ADD COLUMN mask_loss double precision,
    ADD COLUMN val_cider double precision,
    ADD COLUMN val_bleu4 double precision,
    ADD COLUMN val_score double precision;
