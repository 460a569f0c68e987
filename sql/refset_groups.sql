-- Groups of near-identical references within each reference set (written by `refset add`).
--
-- `refset_images.ref_group` is the smallest ref_id of the reference's group: the same picture
-- at two sizes, a re-encoded copy, a logo moved a little (see coyo_db/audit/ref_groups.py).
-- `refset_groups` lists each group of more than one reference with its members; a reference
-- alone is its own group and is not listed. Sets registered before groups existed have no
-- groups (null ref_group).
-- requires: refset_images

CREATE OR REPLACE TEMP VIEW refset_groups AS
SELECT
    refset,
    ref_group,
    count(*) AS members,
    list(ref_path ORDER BY ref_id) AS ref_paths,
    list(ref_id ORDER BY ref_id) AS ref_ids
FROM refset_images
WHERE ref_group IS NOT NULL
GROUP BY refset, ref_group
HAVING count(*) > 1
ORDER BY refset, members DESC, ref_group;
