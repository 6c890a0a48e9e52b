-- 0004: rollups for the dashboard, maintained at ingest.
-- The dashboard must answer in under a second at 10 M records; scanning
-- `records` joined with `reports` for every page render does not. Ingest
-- appends one partial aggregate row per (domain, day, source_ip) of each
-- committed batch, in the same transaction as the records, so the rollup is
-- never ahead of or behind the data. Rows are partial sums: readers always
-- SUM ... GROUP BY; dmarclens.store.rollups.compact() merges them.

CREATE TABLE rollup_source_daily (
    domain            VARCHAR NOT NULL,
    day               DATE NOT NULL,
    source_ip         VARCHAR NOT NULL,
    messages          BIGINT NOT NULL,
    passed            BIGINT NOT NULL,
    dkim_aligned      BIGINT NOT NULL,
    spf_aligned       BIGINT NOT NULL,
    disp_quarantine   BIGINT NOT NULL,
    disp_reject       BIGINT NOT NULL,
    failed_overridden BIGINT NOT NULL,
    records           BIGINT NOT NULL
);
COMMENT ON TABLE rollup_source_daily IS 'Dashboard rollup: messages per policy domain, day and source IP (partial sums appended per ingest batch; always SUM ... GROUP BY).';
COMMENT ON COLUMN rollup_source_daily.domain IS 'Policy domain of the reports (reports.domain).';
COMMENT ON COLUMN rollup_source_daily.day IS 'UTC day of the records (records.day).';
COMMENT ON COLUMN rollup_source_daily.source_ip IS 'Sending IP (records.source_ip).';
COMMENT ON COLUMN rollup_source_daily.messages IS 'Sum of records.count.';
COMMENT ON COLUMN rollup_source_daily.passed IS 'Messages that passed DMARC.';
COMMENT ON COLUMN rollup_source_daily.dkim_aligned IS 'Messages with aligned DKIM pass.';
COMMENT ON COLUMN rollup_source_daily.spf_aligned IS 'Messages with aligned SPF pass.';
COMMENT ON COLUMN rollup_source_daily.disp_quarantine IS 'Messages the receivers quarantined.';
COMMENT ON COLUMN rollup_source_daily.disp_reject IS 'Messages the receivers rejected.';
COMMENT ON COLUMN rollup_source_daily.failed_overridden IS 'Messages that failed DMARC but carried a receiver override reason (forwarded, mailing_list, local_policy ...).';
COMMENT ON COLUMN rollup_source_daily.records IS 'Record rows summed into this row.';

-- Backfill for databases that already hold records when this migration runs.
INSERT INTO rollup_source_daily
SELECT p.domain, r.day, r.source_ip,
       sum(r.count),
       coalesce(sum(r.count) FILTER (WHERE r.dmarc_pass), 0),
       coalesce(sum(r.count) FILTER (WHERE r.dkim_aligned), 0),
       coalesce(sum(r.count) FILTER (WHERE r.spf_aligned), 0),
       coalesce(sum(r.count) FILTER (WHERE r.disposition = 'quarantine'), 0),
       coalesce(sum(r.count) FILTER (WHERE r.disposition = 'reject'), 0),
       coalesce(sum(r.count) FILTER (WHERE NOT r.dmarc_pass AND len(coalesce(r.override_reasons, [])) > 0), 0),
       count(*)
FROM records r JOIN reports p USING (report_key)
GROUP BY p.domain, r.day, r.source_ip;
