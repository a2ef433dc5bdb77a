-- Equality and Quality Account progress returns (issue 19): a provider's returns on the
-- Workforce Race Equality Standard, the Equality Delivery System and the Accessible
-- Information Standard, and its progress against each Quality Account priority. One row per
-- provider, standard, priority and period: a later return for the same replaces it (as a
-- corrected FFT return does). Every item is in monitor.feedback too; this is the CQRM pack's
-- reading of them.
CREATE TABLE equality_returns (
    ods_code    text NOT NULL,
    standard    text NOT NULL CHECK (standard IN ('wres', 'eds', 'ais',
                                                  'quality_account_priority')),
    priority    text NOT NULL DEFAULT '',  -- the Quality Account priority (redacted); '' else
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    feedback_id uuid NOT NULL,
    status      text NOT NULL CHECK (status IN ('on_track', 'at_risk', 'off_track',
                                                'completed')),
    figure      double precision,
    summary     text NOT NULL,             -- the progress summary, as intake redacted it
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ods_code, standard, priority, period)
);
