-- A concern's evidence in a table of its own, one row per item: an update adds its new items
-- (``ON CONFLICT DO NOTHING``: the same item twice is kept once) without reading or rewriting
-- the items the concern already holds, and an agenda reads only the latest few.
CREATE TABLE concern_evidence (
    concern_id  uuid NOT NULL REFERENCES concerns ON DELETE CASCADE,
    feedback_id uuid NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,  -- the order the items were added in
    item        jsonb NOT NULL,                        -- shared.events.Evidence
    PRIMARY KEY (concern_id, feedback_id)
);
CREATE INDEX concern_evidence_latest ON concern_evidence (concern_id, seq DESC);

ALTER TABLE concerns ADD COLUMN evidence_count int NOT NULL DEFAULT 0;

INSERT INTO concern_evidence (concern_id, feedback_id, item)
SELECT c.concern_id, (e.item->>'feedback_id')::uuid, e.item
  FROM concerns c CROSS JOIN LATERAL jsonb_array_elements(c.evidence) WITH ORDINALITY AS e(item, n)
 ORDER BY c.concern_id, e.n
ON CONFLICT DO NOTHING;

UPDATE concerns c SET evidence_count = (
    SELECT count(*) FROM concern_evidence e WHERE e.concern_id = c.concern_id);

ALTER TABLE concerns DROP COLUMN evidence;
