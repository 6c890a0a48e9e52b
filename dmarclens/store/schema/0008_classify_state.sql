-- 0008: what the last traffic-class refresh saw (dmarclens/enrich/classify.py, docs/identity.md).
-- After every ingest only the records whose class can change are recomputed:
-- the new (still unclassified) rows, and per policy domain the days after them
-- whose history they feed. That is exact only while the stored classes are
-- those of the current rules over the records already classified; these
-- tables remember what the last refresh saw, so the next one can tell and
-- recomputes everything when anything else changed.

CREATE TABLE classify_state (
    rules_fingerprint VARCHAR NOT NULL,
    classified_rows   BIGINT NOT NULL,
    lookalikes_owned  VARCHAR,
    refreshed_at      TIMESTAMPTZ NOT NULL,
    mode              VARCHAR NOT NULL,
    reason            VARCHAR,
    rows_recomputed   BIGINT NOT NULL,
    rows_changed      BIGINT NOT NULL
);
COMMENT ON TABLE classify_state IS 'One row: the last traffic-class refresh that did something, and what the next one checks before recomputing only the new rows.';
COMMENT ON COLUMN classify_state.rules_fingerprint IS 'Fingerprint of the [identity] rules the classes were computed with; a different one means every row is recomputed.';
COMMENT ON COLUMN classify_state.classified_rows IS 'Rows of records with a traffic_class after the refresh; fewer now (a domain hidden) means every row is recomputed.';
COMMENT ON COLUMN classify_state.lookalikes_owned IS 'Fingerprint of the domain list identifier_lookalikes was built for, when the table holds exactly the classified rows'' identifiers; otherwise NULL and the next refresh rebuilds it.';
COMMENT ON COLUMN classify_state.refreshed_at IS 'When the refresh ran (UTC).';
COMMENT ON COLUMN classify_state.mode IS 'full (every row) or incremental (the rows new records can change).';
COMMENT ON COLUMN classify_state.reason IS 'Why it was full (rules changed, records removed ...), or what the incremental run read.';
COMMENT ON COLUMN classify_state.rows_recomputed IS 'Rows whose class was computed.';
COMMENT ON COLUMN classify_state.rows_changed IS 'Rows whose stored class changed (newly classified rows included).';

CREATE TABLE classify_domains (
    domain            VARCHAR NOT NULL,
    first_day         DATE NOT NULL
);
COMMENT ON TABLE classify_domains IS 'Per policy domain, its first day as of the last refresh: the too_little_history rule needs it without reading the whole domain.';
COMMENT ON COLUMN classify_domains.domain IS 'Policy domain (reports.domain); one row each.';
COMMENT ON COLUMN classify_domains.first_day IS 'Earliest records.day of the domain at the last refresh.';

COMMENT ON COLUMN records.traffic_class IS 'authorized, forwarded, misconfigured, spoofed or unknown (docs/identity.md); NULL until classified (after every ingest, and by dmarclens enrich).';
COMMENT ON TABLE identifier_lookalikes IS 'Envelope-from and DKIM signing domains in the reports that imitate one of the user''s domains; extended after every ingest, rebuilt when the domain list or the rules change.';
COMMENT ON COLUMN identifier_lookalikes.refreshed_at IS 'When the row was last written (UTC): a rebuild, or an ingest that added messages to it.';
