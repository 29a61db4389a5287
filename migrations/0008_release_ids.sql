-- The authors' ids of samples imported from their release (`mmtt import mmtt-release`): every
-- export writes them back unchanged, so predictions keyed to them still match the ground truth.
-- NULL for the platform's own forgeries (exports give those `{prefix}_{forgery id}`).

ALTER TABLE forgeries ADD COLUMN release_image_id text, ADD COLUMN release_instance_id jsonb;

-- imports made before this migration kept both in the provenance
UPDATE forgeries
   SET release_image_id = provenance->>'image_id',
       release_instance_id = NULLIF(provenance->'instance_id', 'null'::jsonb)
 WHERE provenance->>'generator' = 'mmtt-release' AND provenance ? 'image_id';

-- one sample per authors' image id
CREATE UNIQUE INDEX forgeries_release_image_id_key ON forgeries (release_image_id) WHERE release_image_id IS NOT NULL;
