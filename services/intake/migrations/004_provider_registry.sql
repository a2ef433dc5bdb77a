-- The registry covers every provider type an ICB commissions (trusts, GP practices, care
-- homes, community, mental-health and voluntary services) and knows each provider's ICB:
-- the commissioner named on its meetings and e-mails.
ALTER TABLE providers
    ADD COLUMN icb_code        text,
    ADD COLUMN icb_name        text,
    ADD COLUMN network_code    text,  -- a GP practice's primary care network (PCN)
    ADD COLUMN network_name    text,
    ADD COLUMN cqc_location_id text;  -- a care home's (or any regulated site's) CQC location
