-- Trend rules (clusters, SPC, funnel, complaint handling) and the concern lifecycle.

-- Why a concern was resolved (closed by escalation, or its signal back to common cause).
ALTER TABLE concerns ADD COLUMN resolution text;
CREATE INDEX concerns_rule_open ON concerns (rule, ods_code) WHERE status = 'open';

-- The provider as intake last described it: trend jobs raise concerns without an event in hand.
CREATE TABLE providers (
    ods_code   text PRIMARY KEY,
    provider   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX feedback_kind_date ON feedback (kind, occurred_on);

-- Monthly FFT returns, one row per provider, site, setting and month (a resubmission of the
-- same month replaces the earlier one). Charted summed over the provider's sites.
CREATE TABLE fft_months (
    ods_code    text NOT NULL,
    site_code   text NOT NULL DEFAULT '',
    setting     text NOT NULL,
    period      text NOT NULL CHECK (period ~ '^\d{4}-(0[1-9]|1[0-2])$'),
    feedback_id uuid NOT NULL,
    responses   integer NOT NULL CHECK (responses >= 0),
    positive    integer NOT NULL CHECK (positive >= 0),
    negative    integer NOT NULL CHECK (negative >= 0),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ods_code, site_code, setting, period)
);
CREATE INDEX fft_months_setting_period ON fft_months (setting, period);

-- Special-cause improvement, recorded as it is seen (the latest point of a series).
CREATE TABLE improvements (
    ods_code    text NOT NULL,
    metric      text NOT NULL,
    setting     text NOT NULL,
    period      text NOT NULL,
    value       double precision NOT NULL,
    signals     jsonb NOT NULL,
    figures     jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ods_code, metric, setting, period)
);

-- Each provider's place on the funnel of a setting and month, as last evaluated.
CREATE TABLE funnel_results (
    setting      text NOT NULL,
    period       text NOT NULL,
    ods_code     text NOT NULL,
    events       integer NOT NULL,
    responses    integer NOT NULL,
    proportion   double precision NOT NULL,
    z            double precision NOT NULL,
    z_adjusted   double precision NOT NULL,
    band         text NOT NULL,
    target       double precision NOT NULL,
    phi          double precision NOT NULL,
    tau2         double precision NOT NULL,
    providers    integer NOT NULL,
    evaluated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (setting, period, ods_code)
);
CREATE INDEX funnel_results_provider ON funnel_results (ods_code, setting, period);

-- The durable schedule of time-driven reviews (month close, daily review). Replicas claim a
-- due job with FOR UPDATE SKIP LOCKED, so each runs once.
CREATE TABLE schedule (
    job         text PRIMARY KEY,
    due_at      timestamptz NOT NULL,
    last_run_at timestamptz,
    last_result jsonb
);
