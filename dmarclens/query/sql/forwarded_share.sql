-- purpose: Per reporter, the share of messages the receiver marked as forwarded or mailing-list traffic.
-- param: days int = 30 | look at the last N days, as_of included
-- param: as_of date = NULL | the last day to look at (default: the newest day in the data)
-- param: domain text = NULL | only this policy domain (default: every domain)
-- Forwarding breaks SPF and often DKIM, so forwarded mail fails DMARC without
-- being spoofed. Knowing each receiver's forwarded share tells apart a real
-- spoofing wave from a receiver whose users forward a lot, before p=reject.
WITH bounds AS (
    SELECT coalesce($as_of::DATE, (SELECT max(day) FROM v_records)) AS as_of
),
rows AS (
    SELECT r.org_name AS reporter, r.count, r.dmarc_pass,
           [lower(x.type) for x in coalesce(r.override_reasons, [])] AS reasons
    FROM v_records r, bounds b
    WHERE r.day > b.as_of - $days::INTEGER AND r.day <= b.as_of
      AND ($domain::VARCHAR IS NULL OR r.domain = $domain::VARCHAR)
)
SELECT reporter,
       sum(count)::BIGINT AS messages,
       coalesce(sum(count) FILTER (WHERE list_contains(reasons, 'forwarded')), 0)::BIGINT AS forwarded,
       coalesce(sum(count) FILTER (WHERE list_contains(reasons, 'mailing_list')), 0)::BIGINT AS mailing_list,
       coalesce(sum(count) FILTER (WHERE NOT dmarc_pass), 0)::BIGINT AS failed,
       round(coalesce(sum(count) FILTER (WHERE list_contains(reasons, 'forwarded')
                                           OR list_contains(reasons, 'mailing_list')), 0) / sum(count), 4)
           AS forwarded_share
FROM rows
GROUP BY reporter
ORDER BY forwarded_share DESC, messages DESC, reporter;
