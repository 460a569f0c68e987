-- Reviewers' decisions (`reviews`, written by `coyo-db review` and the web app's review forms).
--
-- `reviews_latest`: the decision that counts on each subject, the latest one (ties broken by
-- review_id). A subject is (kind, id, method) for a duplicate review and (kind, id, refset,
-- ref_id) for a contamination review; the decision itself is not part of it, so marking an
-- image `keeper` and later `not_duplicate` leaves `not_duplicate`.
-- requires: reviews

CREATE OR REPLACE TEMP VIEW reviews_latest AS
SELECT *
FROM reviews
QUALIFY row_number() OVER (
    PARTITION BY kind, id, coalesce(method, ''), coalesce(refset, ''), coalesce(ref_id, -1)
    ORDER BY reviewed_at DESC, review_id DESC
) = 1;
