-- Synthetic sources (`mmtt seed-synthetic`) for benchmarks and tests.
ALTER TABLE sources DROP CONSTRAINT sources_dataset_check;
ALTER TABLE sources ADD CONSTRAINT sources_dataset_check CHECK (dataset IN ('celebamask-hq', 'ffhq', 'photos', 'synthetic'));
