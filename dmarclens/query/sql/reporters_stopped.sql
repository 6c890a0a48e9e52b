-- purpose: Reporters that stopped sending reports for a domain while other reporters still do.
-- param: quiet_days int = 3 | flag when the reporter's last report is more than this many days older than the domain's newest
-- param: min_reports int = 5 | only reporters that had sent at least this many reports
-- param: domain text = NULL | only this policy domain (default: every domain)
-- A receiver that stops reporting takes its view of your mail with it: a
-- changed rua address, a full mailbox, a filter eating the reports. The
-- comparison is with the domain's own newest report, so a pause of the whole
-- feed (see silent_domains) does not show up here.
WITH per_reporter AS (
    SELECT domain, reporter, count(*) AS reports,
           min(begin_ts)::DATE AS first_report, max(end_ts)::DATE AS last_report,
           sum(messages)::BIGINT AS messages
    FROM v_reports
    WHERE ($domain::VARCHAR IS NULL OR domain = $domain::VARCHAR)
    GROUP BY domain, reporter
),
per_domain AS (
    SELECT domain, max(last_report) AS domain_last_report FROM per_reporter GROUP BY domain
)
SELECT r.domain, r.reporter, r.reports, r.messages, r.first_report, r.last_report,
       d.domain_last_report, d.domain_last_report - r.last_report AS days_quiet
FROM per_reporter r JOIN per_domain d USING (domain)
WHERE r.reports >= $min_reports::INTEGER
  AND d.domain_last_report - r.last_report > $quiet_days::INTEGER
ORDER BY days_quiet DESC, r.messages DESC, r.domain, r.reporter;
