-- Rank support for the fetch API: the number of players with a score above a given score,
-- without counting them one by one.
--
-- `score_prefix_counts` is a radix-256 histogram of `users.score`: the row (shift_bits, prefix)
-- holds the number of players whose `score >> shift_bits = prefix`, for shift_bits in 0, 8, ...,
-- 56. The number of players with a score above s is a sum over at most 8 × 255 of its rows (for
-- each shift, the prefixes above s's prefix under the same next-higher prefix), whatever the
-- number of players; the fetch API then adds the players tied with s whose username sorts
-- before (a range of users_by_score).
--
-- The writer has nothing to maintain: the triggers below keep the histogram exact inside the
-- writer's own transactions (a rolled-back batch rolls its counts back too). Prefix 0 is never
-- read, so no row is kept for it: registering a player (score 0) writes nothing here, and a
-- score change costs one statement per shift whose prefix changes (usually just shift 0).
-- A row whose count drops to 0 stays; it is harmless, and
--   DELETE FROM score_prefix_counts WHERE players = 0
-- purges such rows at any time, concurrently with the writer.
--
-- Invariants: scores are never negative (SPEC §3); after a TRUNCATE of `users` (which fires no
-- trigger) truncate this table too. Consistency check:
--   SELECT shift_bits, prefix, players FROM score_prefix_counts WHERE players <> 0
-- must equal
--   SELECT s.shift_bits, u.score >> s.shift_bits AS prefix, COUNT(*) AS players
--   FROM users u JOIN (SELECT 0 AS shift_bits UNION ALL SELECT 8 … UNION ALL SELECT 56) s
--   WHERE u.score >> s.shift_bits > 0 GROUP BY 1, 2
-- (fetch-api's tests do exactly that after every kind of write).
--
-- Runs on MariaDB >= 10.8 and Aurora MySQL 8. Creating triggers needs the TRIGGER privilege
-- and, on MySQL with binary logging enabled, log_bin_trust_function_creators = 1.

CREATE TABLE score_prefix_counts (
    shift_bits TINYINT UNSIGNED NOT NULL,
    prefix     BIGINT           NOT NULL,
    players    BIGINT           NOT NULL,
    PRIMARY KEY (shift_bits, prefix)
) ENGINE = InnoDB;

-- Backfill from the players already registered. Exact when nothing writes `users` while this
-- migration runs: the incoming handler migrates before it starts consuming; stop any other
-- instance first.
INSERT INTO score_prefix_counts (shift_bits, prefix, players)
SELECT s.shift_bits, u.score >> s.shift_bits, COUNT(*)
FROM users u
JOIN (SELECT 0 AS shift_bits UNION ALL SELECT 8 UNION ALL SELECT 16 UNION ALL SELECT 24
      UNION ALL SELECT 32 UNION ALL SELECT 40 UNION ALL SELECT 48 UNION ALL SELECT 56) s
WHERE u.score >> s.shift_bits > 0
GROUP BY s.shift_bits, u.score >> s.shift_bits;

CREATE TRIGGER users_score_prefix_insert AFTER INSERT ON users FOR EACH ROW
BEGIN
    DECLARE sh INT DEFAULT 0;
    shifts: WHILE sh < 64 DO
        -- A zero prefix here means zero prefixes at every higher shift too.
        IF (NEW.score >> sh) = 0 THEN
            LEAVE shifts;
        END IF;
        INSERT INTO score_prefix_counts (shift_bits, prefix, players)
            VALUES (sh, NEW.score >> sh, 1)
            ON DUPLICATE KEY UPDATE players = players + 1;
        SET sh = sh + 8;
    END WHILE shifts;
END;

CREATE TRIGGER users_score_prefix_update AFTER UPDATE ON users FOR EACH ROW
BEGIN
    DECLARE sh INT DEFAULT 0;
    shifts: WHILE sh < 64 DO
        -- Equal prefixes here mean equal prefixes at every higher shift too.
        IF (OLD.score >> sh) = (NEW.score >> sh) THEN
            LEAVE shifts;
        END IF;
        -- One statement moves the player from the old prefix to the new one.
        IF (OLD.score >> sh) > 0 AND (NEW.score >> sh) > 0 THEN
            INSERT INTO score_prefix_counts (shift_bits, prefix, players)
                VALUES (sh, OLD.score >> sh, -1), (sh, NEW.score >> sh, 1)
                ON DUPLICATE KEY UPDATE players = players + VALUES(players);
        ELSEIF (NEW.score >> sh) > 0 THEN
            INSERT INTO score_prefix_counts (shift_bits, prefix, players)
                VALUES (sh, NEW.score >> sh, 1)
                ON DUPLICATE KEY UPDATE players = players + 1;
        ELSE
            UPDATE score_prefix_counts SET players = players - 1
                WHERE shift_bits = sh AND prefix = OLD.score >> sh;
        END IF;
        SET sh = sh + 8;
    END WHILE shifts;
END;

CREATE TRIGGER users_score_prefix_delete AFTER DELETE ON users FOR EACH ROW
BEGIN
    DECLARE sh INT DEFAULT 0;
    shifts: WHILE sh < 64 DO
        IF (OLD.score >> sh) = 0 THEN
            LEAVE shifts;
        END IF;
        UPDATE score_prefix_counts SET players = players - 1
            WHERE shift_bits = sh AND prefix = OLD.score >> sh;
        SET sh = sh + 8;
    END WHILE shifts;
END;
