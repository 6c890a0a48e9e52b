-- purpose: Policy domains with no report at all in the last N days.
-- param: days int = 3 | flag when the newest report ended more than this many days before as_of
-- param: as_of date = today | the day to measure from (default: today, UTC)
-- No reports for a domain means no visibility: the rua record was changed or
-- removed, the report mailbox stopped being fetched, or the domain stopped
-- sending. Unlike the other queries this measures from today by default, so
-- a stalled ingest shows up as every domain going silent.
SELECT domain, count(*) AS reports, max(end_ts)::DATE AS last_report,
       $as_of::DATE - max(end_ts)::DATE AS days_silent,
       list_sort(list_distinct(list(reporter))) AS reporters
FROM v_reports
GROUP BY domain
HAVING $as_of::DATE - max(end_ts)::DATE > $days::INTEGER
ORDER BY days_silent DESC, domain;
