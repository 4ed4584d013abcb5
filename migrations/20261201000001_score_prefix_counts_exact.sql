-- Recounts the rank histogram `score_prefix_counts` exactly, safely while other handlers write.
--
-- The previous migration backfills the histogram and then creates the triggers that keep it
-- exact. A handler of the previous version (no triggers) that changes a score between those two
-- statements — a rolling upgrade — would leave a count wrong for good. This migration runs after
-- the triggers exist, in one transaction:
--   1. it takes a shared lock on every player row (`LOCK IN SHARE MODE`): writers already in
--      flight finish first (their triggers have run), and no score changes until it commits;
--   2. it rebuilds the histogram from `users`;
-- then every later write adjusts the exact counts through the triggers. Writers wait for the
-- recount (a fraction of a second per 100,000 players) and carry on.
--
-- Runs on MariaDB >= 10.8 and Aurora MySQL 8.

SELECT COUNT(*) FROM users LOCK IN SHARE MODE;

DELETE FROM score_prefix_counts;

INSERT INTO score_prefix_counts (shift_bits, prefix, players)
SELECT s.shift_bits, u.score >> s.shift_bits, COUNT(*)
FROM users u
JOIN (SELECT 0 AS shift_bits UNION ALL SELECT 8 UNION ALL SELECT 16 UNION ALL SELECT 24
      UNION ALL SELECT 32 UNION ALL SELECT 40 UNION ALL SELECT 48 UNION ALL SELECT 56) s
WHERE u.score >> s.shift_bits > 0
GROUP BY s.shift_bits, u.score >> s.shift_bits;
