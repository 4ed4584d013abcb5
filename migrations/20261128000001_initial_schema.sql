-- ButtonParty schema. Runs on MariaDB >= 10.8 and Aurora MySQL 8 (no MariaDB- or MySQL-only syntax).
-- Times are epoch milliseconds (BIGINT). Usernames are VARBINARY so that they are stored and
-- compared exactly as sent (no collation, no trailing-space padding): 128 characters of UTF-8 fit
-- in 512 bytes.

-- Players: the place of record. `streak` is the streak as of the round `last_scored_opens_at_ms`;
-- the streak a player sees is derived from round history when read (a missed round is never
-- written to every user row).
CREATE TABLE users (
    username                VARBINARY(512) NOT NULL,
    score                   BIGINT         NOT NULL DEFAULT 0,
    streak                  INT UNSIGNED   NOT NULL DEFAULT 0,
    last_scored_opens_at_ms BIGINT         NULL,
    created_at_ms           BIGINT         NOT NULL,
    PRIMARY KEY (username),
    -- The leaderboard (ORDER BY score DESC, username) and a player's rank read this index only.
    KEY users_by_score (score DESC, username)
) ENGINE = InnoDB;

-- Rounds, recorded from the timestamp queue (idempotent by round_id). Rounds are ordered by
-- opens_at_ms, which is unique.
CREATE TABLE rounds (
    round_id       VARBINARY(256) NOT NULL,
    opens_at_ms    BIGINT         NOT NULL,
    closes_at_ms   BIGINT         NOT NULL,
    recorded_at_ms BIGINT         NOT NULL,
    PRIMARY KEY (round_id),
    UNIQUE KEY rounds_by_opening (opens_at_ms)
) ENGINE = InnoDB;

-- The press ledger: one row per (player, round) the player scored in. Its primary key is what
-- makes a redelivered or repeated press score at most once.
CREATE TABLE scores (
    username       VARBINARY(512) NOT NULL,
    round_opens_at_ms BIGINT      NOT NULL,
    round_id       VARBINARY(256) NOT NULL,
    pressed_at_ms  BIGINT         NOT NULL,
    streak         INT UNSIGNED   NOT NULL,
    points         BIGINT         NOT NULL,
    message_id     VARBINARY(128) NOT NULL,
    PRIMARY KEY (username, round_opens_at_ms),
    KEY scores_by_round (round_opens_at_ms)
) ENGINE = InnoDB;

-- Powerup purchases that took effect (the grant history: freezes since a player's last scored
-- round matter for the streak). `request_key` is the client's request_id, or `msg:<MessageId>`
-- without one, so a retried purchase or a redelivered message applies once.
CREATE TABLE powerups (
    username      VARBINARY(512) NOT NULL,
    request_key   VARBINARY(300) NOT NULL,
    kind          ENUM('FREEZE', 'MULTIPLIER', 'EXTENDER') NOT NULL,
    tier          TINYINT UNSIGNED NOT NULL,
    price         BIGINT         NOT NULL,
    starts_at_ms  BIGINT         NOT NULL,
    expires_at_ms BIGINT         NOT NULL,
    message_id    VARBINARY(128) NOT NULL,
    PRIMARY KEY (username, request_key),
    KEY powerups_by_start (username, starts_at_ms)
) ENGINE = InnoDB;

-- Purchases that were judged and rejected (not enough points), so that a redelivery of the same
-- request is not judged again against a score that has since grown.
CREATE TABLE rejected_purchases (
    username      VARBINARY(512) NOT NULL,
    request_key   VARBINARY(300) NOT NULL,
    reason        VARCHAR(64)    NOT NULL,
    judged_at_ms  BIGINT         NOT NULL,
    PRIMARY KEY (username, request_key)
) ENGINE = InnoDB;

-- Push endpoints: the SNS platform endpoint of each player's device and its topic subscription.
CREATE TABLE push_endpoints (
    username         VARBINARY(512) NOT NULL,
    endpoint_arn     VARCHAR(1024)  NOT NULL,
    subscription_arn VARCHAR(1024)  NULL,
    updated_at_ms    BIGINT         NOT NULL,
    PRIMARY KEY (username)
) ENGINE = InnoDB;
