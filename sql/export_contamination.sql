-- Rows an export leaves out by default because they copy an evaluation image.
--
-- `export_contaminated_ids`: every id of the `contamination` table (written by `coyo-db audit`,
-- which keeps only hits at its default operating point), once each. `coyo-db export` drops these
-- unless --keep-contaminated. Without a `contamination` table nothing is excluded for this
-- reason, and the export's manifest says so.
-- requires: contamination

CREATE OR REPLACE TEMP VIEW export_contaminated_ids AS
SELECT DISTINCT id
FROM contamination
WHERE id IS NOT NULL;
