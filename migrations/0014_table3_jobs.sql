-- Table 3 jobs (issue 16): a trained stage-2 model predicted with each regions variant (w/o FPN,
-- w/ FPN, w/ FPN-GT) on a split and scored, as one job of kind `table3`.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('import', 'masks', 'forge', 'export', 'eval', 'train', 'table3'));
