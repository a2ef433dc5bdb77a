-- A concern's evidence in a table of its own, one row per item: an update adds its new items
-- without reading or rewriting the items the concern already holds, and an agenda reads only
-- the latest few. ``pos`` numbers a concern's items 1, 2, ... in the order they were added
-- (the concern's ``evidence_count`` is the last), so that the latest N are a range of the
-- index, read alone whatever the plan.
CREATE TABLE concern_evidence (
    concern_id  uuid NOT NULL REFERENCES concerns ON DELETE CASCADE,
    feedback_id uuid NOT NULL,
    pos         int NOT NULL CHECK (pos > 0),
    item        jsonb NOT NULL,                        -- shared.events.Evidence
    PRIMARY KEY (concern_id, feedback_id),
    UNIQUE (concern_id, pos)
);

ALTER TABLE concerns ADD COLUMN evidence_count int NOT NULL DEFAULT 0;

INSERT INTO concern_evidence (concern_id, feedback_id, pos, item)
SELECT concern_id, feedback_id, row_number() OVER (PARTITION BY concern_id ORDER BY n), item
  FROM (SELECT DISTINCT ON (c.concern_id, (e.item->>'feedback_id')::uuid) c.concern_id,
               (e.item->>'feedback_id')::uuid AS feedback_id, e.item, e.n
          FROM concerns c
         CROSS JOIN LATERAL jsonb_array_elements(c.evidence) WITH ORDINALITY AS e(item, n)
         ORDER BY c.concern_id, (e.item->>'feedback_id')::uuid, e.n) AS first_seen;

UPDATE concerns c SET evidence_count = (
    SELECT count(*) FROM concern_evidence e WHERE e.concern_id = c.concern_id);

ALTER TABLE concerns DROP COLUMN evidence;
